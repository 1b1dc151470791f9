/**
 * The resync's passes (pure logic, fake sinks): which objects get a full check,
 * and a pass asked for mid-sweep is run after it, not dropped. The file sink's
 * own `suspects` runs on real dirs in sink-files-drift.test.ts (daemon process).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ResyncPasses } from '../src/reconcile/resync.js';
import type { DesiredObject } from '../src/desired/types.js';
import type { ObjectId } from '../src/keyspace.js';
import type { Sink } from '../src/sink/types.js';
import { createLogger } from '../src/log.js';

const obj = (id: string) => ({ id }) as DesiredObject;
const ALL = ['configmaps/a/x', 'configmaps/a/y', 'configmaps/a/z', 'secrets/a/s'];
const logger = createLogger('silent');

function passes(sinks: Partial<Sink>[], applied = ALL.slice(0, 3)) {
  const runs: { checked: string[]; deep: boolean }[] = [];
  let done!: () => void;
  let next = new Promise<void>((r) => (done = r));
  const p = new ResyncPasses({
    sinks: sinks as Sink[],
    logger,
    applied: () => applied.map(obj),
    isApplied: (id) => applied.includes(id),
    check: (suspect, deep) => {
      runs.push({ checked: ALL.filter((id) => suspect(id as ObjectId)), deep });
      done();
      next = new Promise<void>((r) => (done = r));
    },
  });
  return { p, runs, ran: () => next };
}

test('resync: without Sink.suspects every object gets a full check', async () => {
  const { p, runs, ran } = passes([{}, { suspects: async () => [] }]);
  const pass = ran();
  p.start(false);
  await pass;
  assert.deepEqual(runs, [{ checked: ALL, deep: false }]);
});

test('resync: with Sink.suspects, only the suspects of any sink and the objects no sink could vouch for', async () => {
  const asked: boolean[] = [];
  const { p, runs, ran } = passes([
    { suspects: async (_o, deep) => (asked.push(deep), ['configmaps/a/x']) },
    { suspects: async () => ['configmaps/a/y'] },
  ]);
  const pass = ran();
  p.start(true);
  await pass;
  // z: vouched for by both; s: not applied with its current desired state, so checked.
  assert.deepEqual(runs, [{ checked: ['configmaps/a/x', 'configmaps/a/y', 'secrets/a/s'], deep: true }]);
  assert.deepEqual(asked, [true]);
});

test('resync: a pass asked for during a sweep runs after it (deep if either was), never two sweeps at once', async () => {
  let release!: () => void;
  let sweeps = 0;
  let inFlight = 0;
  const { p, runs, ran } = passes([
    {
      suspects: async () => {
        sweeps++;
        inFlight++;
        assert.equal(inFlight, 1, 'two sweeps at once');
        if (sweeps === 1) await new Promise<void>((r) => (release = r));
        inFlight--;
        return [];
      },
    },
  ]);
  const first = ran();
  p.start(false);
  p.start(true); // leadership gained mid-sweep, say
  p.start(false);
  await new Promise((r) => setImmediate(r));
  release();
  await first;
  const second = ran();
  await second;
  assert.deepEqual(runs.map((r) => r.deep), [false, true]);
  assert.equal(sweeps, 2);
  await p.close();
});

test('resync: a sink whose sweep fails makes every object a suspect (logged), and close waits for the sweep', async () => {
  const { p, runs, ran } = passes([{ suspects: async () => Promise.reject(new Error('EACCES: lstat /x')) }]);
  const pass = ran();
  p.start(false);
  await pass;
  assert.deepEqual(runs, [{ checked: ALL, deep: false }]);
  await p.close();
  p.start(false);
  await new Promise((r) => setImmediate(r));
  assert.equal(runs.length, 1, 'a pass ran after close');
});
