/**
 * Fault: keys created and deleted while the daemon's connection is cut must never show
 * beside a later change of another prefix (see the test's comment).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../harness/etcd.js';
import { startProxy } from '../harness/proxy.js';
import { DaemonProcess, readOr, until } from '../harness/daemon.js';

const P = '/confsync';
const ROUNDS = 6;
const K = `${P}/global/configmaps/default/app/k`;
const M = `${P}/clusters/c1/configmaps/default/app/m`;

/**
 * A confirming read proves that a prefix holds at head H what it held at revs[j]; it
 * does not prove that the watcher has no events in between. Keys created and deleted
 * while the connection was cut leave the prefix as it was, so the read confirms it and
 * the other prefix's later change is released while the catching-up watcher still
 * holds those events. Once they arrive, the create must not show: the transient key
 * `x` existed only beside the old `k`.
 */
test('after a reconnect, keys created and deleted meanwhile never show beside a later change of the other prefix', async (t) => {
  const X = `${P}/clusters/c1/configmaps/default/app/x`;
  const etcd = await startEtcd();
  const proxy = await startProxy(etcd.endpoint);
  const client = new Etcd3({ hosts: etcd.endpoint });
  const d = new DaemonProcess({ cluster: 'c1', etcd: { endpoints: [proxy.endpoint] } });
  try {
    await client.put(K).value('k0');
    await client.put(M).value('m0');
    d.start();
    await d.ready();
    const fk = d.file('configmaps', 'default', 'app', 'k');
    const fx = d.file('configmaps', 'default', 'app', 'x');
    await until(() => readOr(fk) === 'k0', 'first projection');
    const never: string[] = [];
    const took: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      proxy.cut();
      await sleep(200);
      // etcd hands a watcher that is behind its backlog in slices of 1,000 revisions. The
      // cluster prefix gets 1,000 revisions that leave it as it was (slice 1), then x, then
      // 1,000 more (slice 2), then x's deletion (slice 3); then k changes. A confirming
      // read after slice 1 finds the prefix as it was and lets k through; x, in slice 2,
      // must not show beside the new k.
      const churn = async (from: number) => {
        for (let i = 0; i < 500; i += 100) {
          const tmp = Array.from({ length: 100 }, (_, j) => `${P}/clusters/c1/configmaps/default/tmp${r}/y${from + i + j}`);
          await Promise.all(tmp.map((key) => client.put(key).value('t')));
          await Promise.all(tmp.map((key) => client.delete().key(key)));
        }
      };
      await churn(0);
      await client.put(X).value(`x${r}`);
      await churn(500);
      await client.delete().key(X);
      await client.put(K).value(`k${r}`);
      const start = Date.now();
      proxy.restore();
      // x{r} existed only beside k{r-1}. Watch for 3 s after k{r} shows: the rest of the
      // catch-up arrives within that (one slice per 100 ms).
      let seenK = 0;
      for (;;) {
        const k = readOr(fk);
        const x = readOr(fx);
        if (x !== undefined && k === `k${r}` && readOr(fk) === `k${r}`) never.push(`round ${r}: x=${x} beside k=${k}`);
        if (k === `k${r}` && !seenK) seenK = Date.now();
        if (seenK && Date.now() - seenK > 3000) break;
        assert.ok(Date.now() - start < 30_000, `round ${r}: not converged in 30 s (k=${k})`);
        await sleep(1);
      }
      took.push(seenK - start);
      assert.equal(readOr(fx), undefined, `round ${r}: the transient key is still on disk`);
    }
    t.diagnostic(`k reached the files ${took.join(', ')} ms after the reconnect`);
    assert.deepEqual(never.slice(0, 3), [], `a state etcd never had was on disk in ${new Set(never.map((l) => l.split(':')[0])).size} of ${ROUNDS} rounds`);
  } finally {
    client.close();
    await d.cleanup();
    await proxy.close();
    await etcd.stop();
  }
});
