/**
 * The reconciler's work queue (pure logic): the check lane of the periodic resync
 * runs behind every change, one at a time, and never holds the applied revision.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from '../src/reconcile/queue.js';
import type { ObjectId } from '../src/keyspace.js';

const tick = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

function harness() {
  const order: string[] = [];
  const gates = new Map<string, () => void>();
  let idles = 0;
  let running = 0;
  let maxChecks = 0;
  const q = new WorkQueue({
    concurrency: 4,
    work: async (id, taken) => {
      running += taken.force && id.startsWith('c/') ? 1 : 0;
      maxChecks = Math.max(maxChecks, running);
      order.push(id);
      await new Promise<void>((r) => gates.set(id, r));
      running -= taken.force && id.startsWith('c/') ? 1 : 0;
    },
    onError: (id, err) => assert.fail(`${id}: ${err}`),
    onIdle: async () => void idles++,
  });
  const finish = async (id: string) => {
    for (let i = 0; i < 50 && !gates.has(id); i++) await new Promise((r) => setImmediate(r));
    const g = gates.get(id);
    assert.ok(g, `${id} was never started (order: ${order.join(' ')})`);
    gates.delete(id);
    g();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };
  return { q, order, finish, idles: () => idles, maxChecks: () => maxChecks };
}

test('checks run one at a time and only when no change waits; a change marked mid-pass goes first', async () => {
  const h = harness();
  for (let i = 0; i < 5; i++) h.q.check(`c/o${i}` as ObjectId);
  h.q.pump();
  assert.deepEqual(h.order, ['c/o0'], 'checks must run one at a time');
  await tick();
  const before = h.idles();
  h.q.mark('m/put' as ObjectId, 10, false);
  h.q.pump();
  await tick();
  assert.deepEqual(h.order, ['c/o0', 'm/put'], 'a change must not wait behind the pass');
  assert.equal(h.q.oldestPending(), 10, 'the change holds its revision; the check holds none');
  await h.finish('m/put');
  assert.equal(h.q.oldestPending(), undefined, 'a check in flight held the applied revision back');
  assert.equal(h.idles(), before + 1, 'the idle step (applied revision, status) runs once the changes are done, checks or not');
  for (let i = 0; i < 5; i++) await h.finish(`c/o${i}`);
  assert.equal(h.maxChecks(), 1);
  assert.equal(h.idles(), before + 2, 'one more idle step after the pass (the resync prune)');
  assert.ok(h.q.idle());
});

test('a change for an object waiting in the check lane replaces the check (forced)', async () => {
  const order: [string, boolean][] = [];
  const q = new WorkQueue({
    concurrency: 2,
    work: async (id, taken) => void order.push([id, taken.force]),
    onError: (id, err) => assert.fail(`${id}: ${err}`),
    onIdle: async () => undefined,
  });
  q.check('a' as ObjectId);
  q.check('b' as ObjectId);
  q.mark('b' as ObjectId, 3, false);
  q.pump();
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, [['b', true], ['a', true]]);
});

test('work that never waits on I/O lets the event loop turn (timers, sockets) every ~20 ms, and all of it is done', async () => {
  // Found with 10,000 secrets on tmpfs: nothing to fsync, so every worker ended in a
  // microtask and the queue ran the whole first sync in one turn (5 s); etcd's watch
  // answers went unread and the source took the daemon's silence for etcd's.
  const done: string[] = [];
  let idle!: () => void;
  const idled = new Promise<void>((r) => (idle = r));
  const q = new WorkQueue({
    concurrency: 4,
    work: async (id) => {
      const until = performance.now() + 1; // 1 ms of synchronous work, no await on I/O
      while (performance.now() < until);
      done.push(id);
    },
    onError: (id, err) => assert.fail(`${id}: ${err}`),
    onIdle: async () => idle(),
  });
  const turns: number[] = [];
  const timer = setInterval(() => turns.push(done.length), 0);
  for (let i = 0; i < 300; i++) q.mark(`configmaps/ns/o${i}` as ObjectId, 1, false);
  q.pump();
  await idled;
  clearInterval(timer);
  assert.equal(done.length, 300);
  const during = turns.filter((n) => n > 0 && n < 300);
  assert.ok(during.length >= 5, `a timer ran ${during.length} times while the 300 ms of work was under way (done counts seen: ${turns.slice(0, 20).join(' ')})`);
});
