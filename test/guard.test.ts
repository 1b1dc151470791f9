/**
 * The mass-delete guard through two real daemons (two nodes of one cluster) and a
 * real etcd: `etcdctl del --prefix` of every object removes no file; both daemons
 * report the hold in their status; a daemon restarted meanwhile holds again at
 * start; everything else keeps syncing; `confsync release` lets the removals go.
 * Objects: 2,000, the figure (CONFSYNC_GUARD_OBJECTS=N for another). The hold
 * is checked in both places an operator looks: the status key and the
 * confsync_deletes_held metric. How fast: bench/snapshot.ts, not here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Etcd3 } from 'etcd3';
import { DaemonProcess, MAIN, readOr, until } from './harness/daemon.js';
import { startEtcd } from './harness/etcd.js';
import { freePort } from './harness/ports.js';
import { commit } from './fault/etcd-cluster.js';

const P = '/confsync';
const N = Number(process.env.CONFSYNC_GUARD_OBJECTS ?? 2000);

async function heldMetric(port: number): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^confsync_deletes_held (\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

test(`mass delete of ${N} objects is held on both nodes until "confsync release"; a restart holds too`, async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const ports: Record<string, number> = { n1: await freePort(), n2: await freePort() };
  const cfg = (node: string) => ({ cluster: 'eu', node, etcd: { endpoints: [etcd.endpoint] }, status: { intervalSeconds: 0.2 }, metrics: { listen: `127.0.0.1:${ports[node]}` } });
  const daemons = [new DaemonProcess(cfg('n1')), new DaemonProcess(cfg('n2'))];
  const dir = (d: DaemonProcess, i: number) => d.file('configmaps', 'default', `o-${i}`);
  const present = (d: DaemonProcess) => Array.from({ length: N }, (_, i) => i).filter((i) => fs.existsSync(dir(d, i))).length;
  const held = async (node: string) => {
    const v = await etcdc.get(`${P}/status/eu/${node}`).string();
    return v ? (JSON.parse(v).held?.count as number | undefined) : undefined;
  };
  try {
    for (let i = 0; i < N; i += 100) {
      await commit(etcdc, Array.from({ length: Math.min(100, N - i) }, (_, j) => [`${P}/global/configmaps/default/o-${i + j}/k`, 'v']));
    }
    for (const d of daemons) d.start();
    await until(async () => daemons.every((d) => present(d) === N), `${N} objects on both nodes`, 120_000);

    // The operator's mistake, as the issue tells it: etcdctl, one revision.
    etcd.ctl('del', '--prefix', `${P}/global/configmaps/default/o-`);
    await until(async () => (await held('n1')) === N && (await held('n2')) === N, 'both nodes report the hold in status', 30_000);
    assert.equal(await heldMetric(ports.n1!), N, 'n1: confsync_deletes_held');
    assert.equal(await heldMetric(ports.n2!), N, 'n2: confsync_deletes_held');
    assert.deepEqual(daemons.map(present), [N, N], 'no file removed');
    const text = spawnSync(process.execPath, [MAIN, 'status', '--endpoints', etcd.endpoint], { encoding: 'utf8' });
    for (const node of ['n1', 'n2']) assert.match(text.stdout, new RegExp(`^eu/${node}: ${N} removal\\(s\\) held by the mass-delete guard since .* "confsync release --cluster eu" lets them go$`, 'm'));
    assert.match(daemons[0]!.log, /mass delete held: one batch would remove/);

    // Everything else keeps syncing meanwhile.
    await etcdc.put(`${P}/global/configmaps/default/other/k`).value('during');
    await until(() => daemons.every((d) => readOr(d.file('configmaps', 'default', 'other', 'k')) === 'during'), 'other changes still apply');

    // A restart re-lists: the guard compares with what is on disk and holds again.
    await daemons[1]!.signal('SIGKILL');
    daemons[1] = new DaemonProcess(cfg('n2'), daemons[1]!.dir).start();
    // (Its old status key lives on until its lease expires: read the new process's log.)
    await until(() => daemons[1]!.log.includes('mass delete held'), 'restarted node holds again', 60_000);
    assert.equal(present(daemons[1]!), N, 'no file removed by the restart');

    const r = spawnSync(process.execPath, [MAIN, 'release', '--cluster', 'eu', '--endpoints', etcd.endpoint], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    await until(() => daemons.every((d) => present(d) === 0), 'released removals done', 60_000);
    await until(async () => (await held('n1')) === undefined && (await held('n2')) === undefined, 'hold cleared in status');
    assert.deepEqual([await heldMetric(ports.n1!), await heldMetric(ports.n2!)], [0, 0], 'confsync_deletes_held back to 0');
    assert.equal(readOr(daemons[0]!.file('configmaps', 'default', 'other', 'k')), 'during');

    // Below the threshold nothing is held: 5 removals of 6 objects (minObjects 10).
    await commit(etcdc, Array.from({ length: 5 }, (_, i) => [`${P}/global/configmaps/default/small-${i}/k`, 'v']));
    await until(() => daemons.every((d) => fs.existsSync(d.file('configmaps', 'default', 'small-4'))), 'small objects');
    await etcdc.delete().prefix(`${P}/global/configmaps/default/small-`);
    await until(() => daemons.every((d) => !fs.existsSync(d.file('configmaps', 'default', 'small-0'))), 'small deletes go through at once');
  } finally {
    etcdc.close();
    for (const d of daemons) await d.cleanup();
    await etcd.stop();
  }
});
