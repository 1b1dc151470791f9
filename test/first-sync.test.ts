/**
 * The first full sync (pure logic, fake sinks). The order its objects are taken
 * in: sealed and unsealed alternating. Its prune: a sink whose listing is
 * stable (the file sink) is pruned from its listing at the first snapshot, not
 * listed twice; any other sink (the Kubernetes sink lists nothing until it leads,
 * and may come to lead meanwhile) is listed again. The file sink's own pruning
 * at a restart runs against real dirs in daemon.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { interleaveSealed, Reconciler } from '../src/reconcile/reconciler.js';
import type { DesiredObject } from '../src/desired/types.js';
import type { ObjectId } from '../src/keyspace.js';
import type { Sink } from '../src/sink/types.js';
import { createLogger } from '../src/log.js';

function fakeSink(name: 'files' | 'kubernetes', stable: boolean, listings: ObjectId[][]) {
  const calls = { list: 0, applied: [] as ObjectId[], removed: [] as ObjectId[] };
  const sink: Sink = {
    name,
    stableListing: stable,
    apply: async (o: DesiredObject) => (calls.applied.push(o.id), 'written'),
    plan: async () => 'unchanged',
    remove: async (id) => void calls.removed.push(id),
    list: async () => listings[Math.min(calls.list++, listings.length - 1)]!,
    close: async () => undefined,
  };
  return { sink, calls };
}

test('first sync: a stable sink is pruned from its start listing (listed once), another sink is listed again', async () => {
  const files = fakeSink('files', true, [['configmaps/a/old', 'configmaps/a/x']]);
  // Not leading at the first snapshot (lists nothing), leading by the prune.
  const kube = fakeSink('kubernetes', false, [[], ['configmaps/a/gone', 'configmaps/a/x']]);
  const r = new Reconciler({ prefix: '/confsync/', cluster: 'c1', labels: {}, sinks: [files.sink, kube.sink], logger: createLogger('silent') });
  r.handle({ type: 'snapshot', revision: 5, kvs: [{ key: '/confsync/global/configmaps/a/x/k', value: Buffer.from('v'), modRevision: 5 }] });
  await r.whenIdle();
  assert.equal(r.progress.synced, true);
  assert.deepEqual([files.calls.applied, kube.calls.applied], [['configmaps/a/x'], ['configmaps/a/x']]);
  assert.equal(files.calls.list, 1, 'the file sink is listed once: at the first snapshot');
  assert.deepEqual(files.calls.removed, ['configmaps/a/old']);
  assert.equal(kube.calls.list, 2, 'the other sink is listed again for the prune');
  assert.deepEqual(kube.calls.removed, ['configmaps/a/gone'], 'what it owns by the prune is pruned');

  // A later prune lists every sink afresh.
  r.handle({ type: 'snapshot', revision: 6, kvs: [] });
  await r.whenIdle();
  assert.equal(files.calls.list, 2);
  await r.close();
});

test('first sync: sealed and unsealed objects alternate, whatever their counts; none lost or repeated', () => {
  const cms = Array.from({ length: 5 }, (_, i) => `configmaps/a/c${i}` as ObjectId);
  const secrets = Array.from({ length: 2 }, (_, i) => `secrets/a/s${i}` as ObjectId);
  assert.deepEqual(interleaveSealed([...cms, ...secrets]), ['secrets/a/s0', 'configmaps/a/c0', 'secrets/a/s1', 'configmaps/a/c1', 'configmaps/a/c2', 'configmaps/a/c3', 'configmaps/a/c4']);
  assert.deepEqual(interleaveSealed(secrets), secrets);
  assert.deepEqual(interleaveSealed(new Set(cms)), cms);
  assert.deepEqual(interleaveSealed([]), []);
});
