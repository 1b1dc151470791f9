/**
 * The console's pure model (src/console/model.ts), table-driven: what each cell of
 * the matrix says (in sync, behind, stale, error, gone; lag in revisions and seconds),
 * the cluster summary, and what an event may carry: a config value's start, never a
 * secret's value, nor the value of a key that is not valid (plaintext written by
 * hand under secrets/ lands there), nor a recipient's. The browser test runs the
 * same code against real daemons; this pins the rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleModel } from '../src/console/model.js';
import { Keyspace } from '../src/keyspace.js';

const ks = new Keyspace('/confsync');
const T0 = Date.parse('2026-12-05T12:00:00Z');

function status(cluster: string, node: string, revision: number, at: number, extra: Record<string, unknown> = {}): Buffer {
  const iso = new Date(at).toISOString();
  return Buffer.from(JSON.stringify({ cluster, node, revision, updatedAt: iso, startedAt: iso, objects: 1, errors: 0, failing: 0, state: 'watching', ready: true, version: 't', ...extra }));
}

test('matrix: in sync, behind (revisions and seconds since the change), stale, error, gone; the cluster row takes the worst', () => {
  const m = new ConsoleModel(ks, { staleSeconds: 15 }, T0);
  m.apply({ key: '/confsync/global/configmaps/default/app/k', op: 'put', rev: 10, value: Buffer.from('v') }, T0);
  for (const [node, rev, extra] of [['a', 10, {}], ['b', 10, {}], ['c', 10, { lastError: { path: 'global/configmaps/default/x/k', reason: 'bad' } }], ['d', 10, {}]] as const) {
    m.apply({ key: `/confsync/status/eu/${node}`, op: 'put', rev: 11, value: status('eu', node, rev, T0, extra) }, T0);
  }
  // A change at T0+2s that only a and c apply; d stops writing and is found stale at T0+20s.
  m.apply({ key: '/confsync/clusters/eu/configmaps/default/app/k', op: 'put', rev: 12, value: Buffer.from('w') }, T0 + 2000);
  m.apply({ key: '/confsync/status/eu/a', op: 'put', rev: 13, value: status('eu', 'a', 12, T0 + 19_000) }, T0 + 19_000);
  m.apply({ key: '/confsync/status/eu/b', op: 'put', rev: 14, value: status('eu', 'b', 10, T0 + 19_000) }, T0 + 19_000);
  m.apply({ key: '/confsync/status/eu/c', op: 'put', rev: 15, value: status('eu', 'c', 12, T0 + 19_000, { lastError: { path: 'p', reason: 'r' } }) }, T0 + 19_000);
  // Another cluster's override does not make eu's nodes behind.
  m.apply({ key: '/confsync/clusters/us/configmaps/default/app/k', op: 'put', rev: 16, value: Buffer.from('u') }, T0 + 19_000);
  m.apply({ key: '/confsync/status/us/x', op: 'put', rev: 17, value: status('us', 'x', 16, T0 + 19_000) }, T0 + 19_000);
  m.apply({ key: '/confsync/status/us/x', op: 'delete', rev: 18 }, T0 + 19_500);

  const matrix = m.matrix(T0 + 20_000);
  const eu = matrix.rows.find((r) => r.cluster === 'eu')!;
  const cell = (n: string) => eu.nodes.find((c) => c.node === n)!;
  assert.deepEqual(eu.nodes.map((c) => [c.node, c.state, c.lag]), [['a', 'sync', 0], ['b', 'behind', 2], ['c', 'error', 0], ['d', 'stale', 2]]);
  assert.equal(cell('b').lagSeconds, 18, 'behind since the console saw revision 12, at T0+2s');
  assert.equal(cell('d').ageSeconds, 20);
  assert.deepEqual(
    { ...eu.summary },
    { nodes: 4, sync: 1, behind: 1, stale: 1, error: 1, gone: 0, minRevision: 10, maxLag: 2, errors: 0, state: 'stale' },
  );
  const us = matrix.rows.find((r) => r.cluster === 'us')!;
  assert.deepEqual(us.nodes.map((c) => [c.node, c.state]), [['x', 'gone']]);
  assert.equal(us.summary.state, 'gone');
  assert.equal(matrix.head, 18);
});

test('events: config values previewed as text; secrets, invalid keys and recipients by size only; a status rewrite of its timestamp alone is no event', () => {
  const m = new ConsoleModel(ks, { staleSeconds: 15 }, T0);
  const put = (key: string, value: string, rev: number) => m.apply({ key: `/confsync/${key}`, op: 'put', rev, value: Buffer.from(value) }, T0);
  const xss = '<script>alert(1)</script>';
  const cm = put('global/configmaps/default/app/k', xss, 2)!;
  assert.deepEqual([cm.kind, cm.namespace, cm.name, cm.key, cm.preview, cm.size], ['configmaps', 'default', 'app', 'k', xss, xss.length]);
  const meta = put('global/secrets/default/db/@meta', '{"type":"Opaque"}', 3)!;
  assert.equal(meta.preview, '{"type":"Opaque"}', '@meta is never secret');
  const cases: [string, string][] = [
    ['global/secrets/default/db/password', 'confsync:v2:sealed-envelope-text'],
    ['clusters/us/secrets/default/db/password', 'plaintext-written-by-hand'],
    ['global/secrets/default/db/bad key', 'plaintext-under-an-invalid-key'],
    ['global/secrets/Default/db/password', 'plaintext-under-a-bad-namespace'],
    ['somewhere/else', 'anything'],
    ['recipients/eu', 'confsync1recipient'],
  ];
  let rev = 4;
  for (const [key, value] of cases) {
    const ev = put(key, value, rev++)!;
    assert.equal(ev.size, value.length, key);
    assert.ok(!JSON.stringify(ev).includes(value), `${key}: the event holds the value`);
  }
  assert.equal(put('somewhere/else', 'x', rev++)!.kind, 'invalid');
  const bin = m.apply({ key: '/confsync/global/configmaps/default/bin/k', op: 'put', rev: rev++, value: Buffer.from([0xff, 0xfe, 0x00]) }, T0)!;
  assert.equal(bin.preview, undefined, 'binary values have no preview');
  const long = put('global/configmaps/default/long/k', 'x'.repeat(1000), rev++)!;
  assert.ok(long.preview!.length <= 161);
  assert.equal(put('global/configmaps/default/ctl/k', 'a\u001b[2Jb', rev++)!.preview, 'a\\x1b[2Jb', 'control characters escaped');

  assert.match(m.apply({ key: '/confsync/status/eu/n1', op: 'put', rev: 50, value: status('eu', 'n1', 40, T0) }, T0)!.note!, /revision 40/);
  assert.equal(m.apply({ key: '/confsync/status/eu/n1', op: 'put', rev: 51, value: status('eu', 'n1', 40, T0 + 5000) }, T0 + 5000), undefined);
  assert.match(m.apply({ key: '/confsync/status/eu/n1', op: 'put', rev: 52, value: status('eu', 'n1', 41, T0 + 6000) }, T0 + 6000)!.note!, /^revision 41$/);
  assert.match(m.apply({ key: '/confsync/status/eu/n1', op: 'put', rev: 53, value: Buffer.from('{not json') }, T0)!.note!, /not a status JSON/);
  assert.deepEqual(m.scopesOf('secrets/default/db'), ['global', 'clusters/us']);
  assert.deepEqual(m.clusters(), ['eu', 'us']);
});
