/**
 * Fault: a catch-up after a cut connection must not show a state etcd never had.
 *
 * One object has a key in the global scope (`k`) and one in the cluster scope (`m`),
 * watched by two watchers on one stream. While the daemon's connection is cut,
 * etcd takes a backlog of over 3,000 global revisions, then a new `k`, then a new
 * `m`. etcd hands a watcher that far behind its backlog in slices of 1,000
 * revisions, so after the reconnect the global watcher is still catching up while
 * the cluster watcher has delivered `m`. etcd 3.4.23 (Debian's) answers a progress
 * request right then with its head revision (etcd issue 15220): trusting that
 * answer released `m` before `k` and the object showed the new `m` beside the old
 * `k` — in 3 of 6 rounds before the fix (docs/RELIABILITY.md, bug 6).
 *
 * A reader polls both files the whole time: the new `m` beside an old `k` fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../harness/etcd.js';
import { startProxy } from '../harness/proxy.js';
import { DaemonProcess, readOr, until } from '../harness/daemon.js';
import { progressSynchronised } from '../../src/source/etcd-watch.js';

const P = '/confsync';
const ROUNDS = 4;
const BACKLOG = 3000;
const K = `${P}/global/configmaps/default/app/k`;
const M = `${P}/clusters/c1/configmaps/default/app/m`;

test('progress answers are trusted only from etcd versions that synchronise them with their watchers', () => {
  for (const v of ['3.4.23', '3.4.30', '3.5.0', '3.5.12', 'garbage', '', undefined]) assert.equal(progressSynchronised(v), false, String(v));
  for (const v of ['3.4.31', '3.5.13', '3.5.27', '3.6.0', '3.6.16', '3.7.1', '4.0.0']) assert.equal(progressSynchronised(v), true, v);
});

test('after a reconnect with a backlog on one prefix, a later change on the other prefix never shows before it', async (t) => {
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
    const fm = d.file('configmaps', 'default', 'app', 'm');
    await until(() => readOr(fm) === 'm0' && readOr(fk) === 'k0', 'first projection');
    const mixed: string[] = [];
    const took: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      proxy.cut();
      await sleep(200);
      for (let i = 0; i < BACKLOG; i += 100) {
        await Promise.all(Array.from({ length: 100 }, (_, j) => client.put(`${P}/global/configmaps/default/other${(i + j) % 20}/x`).value(`r${r}-${i + j}`)));
      }
      await client.put(K).value(`k${r}`);
      for (let i = 0; i < 50; i++) await client.put(`${P}/global/configmaps/default/other${i % 20}/x`).value(`tail${r}-${i}`);
      await client.put(M).value(`m${r}`);
      const start = Date.now();
      proxy.restore();
      for (;;) {
        const m = readOr(fm);
        const k = readOr(fk);
        // Read m again after k: m only ever moves forward, so m${r} on both reads brackets k's read.
        if (m === `m${r}` && k !== `k${r}` && readOr(fm) === `m${r}`) mixed.push(`round ${r}: m=${m} beside k=${k}`);
        if (m === `m${r}` && k === `k${r}`) break;
        assert.ok(Date.now() - start < 30_000, `round ${r}: not converged in 30 s (k=${k}, m=${m})`);
        await sleep(1);
      }
      took.push(Date.now() - start);
    }
    t.diagnostic(`converged after the reconnect in ${took.join(', ')} ms`);
    assert.deepEqual(mixed.slice(0, 3), [], `a state etcd never had was on disk in ${new Set(mixed.map((l) => l.split(':')[0])).size} of ${ROUNDS} rounds`);
  } finally {
    client.close();
    await d.cleanup();
    await proxy.close();
    await etcd.stop();
  }
});
