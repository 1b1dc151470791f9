import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from './harness/etcd.js';
import { withDaemon } from './harness/fixture.js';
import { freePort } from './harness/ports.js';
import { DaemonProcess, MAIN, readOr, until } from './harness/daemon.js';

const P = '/confsync';

async function get(url: string): Promise<{ status: number; body: string }> {
  try {
    const r = await fetch(url);
    return { status: r.status, body: await r.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

function metric(body: string, name: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

test('/healthz, /readyz and /metrics: ready after the first sync, counters move, not ready when the watch stalls', async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  await withDaemon({ cluster: 'eu', metrics: { listen: `127.0.0.1:${port}`, stallSeconds: 1.5 } }, async ({ etcd, etcdc, d }) => {
    await until(async () => (await get(`${base}/readyz`)).status === 200, 'ready');
    assert.equal((await get(`${base}/healthz`)).status, 200);
    const before = (await get(`${base}/metrics`)).body;
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v');
    await etcdc.put(`${P}/global/configmaps/default/app/..bad`).value('v');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v', 'file');
    const rev = etcd.revision();
    const after = await until(async () => {
      const body = (await get(`${base}/metrics`)).body;
      // At least: the daemon's own status write right after may move etcd's head (and applied) past rev.
      return (metric(body, 'confsync_applied_revision') ?? 0) >= rev ? body : undefined;
    }, 'applied revision metric');
    assert.equal(metric(after, 'confsync_writes_total{sink="files"}'), (metric(before, 'confsync_writes_total{sink="files"}') ?? 0) + 1);
    assert.equal(metric(after, 'confsync_invalid_inputs_total'), 1);
    assert.equal(metric(after, 'confsync_watch_lag_revisions'), 0);
    assert.equal(metric(after, 'confsync_objects{kind="configmaps"}'), 1);
    assert.ok((metric(after, 'confsync_apply_latency_seconds_count{sink="files"}') ?? 0) >= 1);
    // prom-client's process and Node metrics under the one prefix, no word doubled
    // (`confsync_process_cpu_seconds_total`, never `confsync_process_process_…`).
    const names = [...new Set(after.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]!))];
    for (const name of ['confsync_process_cpu_seconds_total', 'confsync_process_resident_memory_bytes', 'confsync_nodejs_eventloop_lag_seconds']) assert.ok(names.includes(name), `${name} exported`);
    for (const name of names) {
      assert.match(name, /^confsync_[a-z]/, `${name}: one confsync_ prefix`);
      assert.doesNotMatch(name, /(?:^|_)([a-z]+)_\1(?:_|$)/, `${name}: no doubled word`);
    }

    // An update is held for ordering (two watched prefixes) and its payload dir written meanwhile: the apply only swaps it in.
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v2');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v2', 'updated file');
    const prepared = (await get(`${base}/metrics`)).body;
    assert.equal(metric(prepared, 'confsync_prepared_updates_total{result="swapped"}'), 1, 'the update was prepared ahead and swapped in');
    assert.equal(metric(prepared, 'confsync_prepared_updates_total{result="discarded"}'), 0);

    await etcd.kill('SIGKILL');
    await until(async () => (await get(`${base}/readyz`)).status === 503, 'not ready while etcd is gone', 10_000);
    assert.match((await get(`${base}/readyz`)).body, /no progress from the etcd watch/);
    await etcd.start();
    await until(async () => (await get(`${base}/readyz`)).status === 200, 'ready again', 10_000);
    assert.ok((metric((await get(`${base}/metrics`)).body, 'confsync_etcd_reconnects_total') ?? 0) >= 1);
  });
});

test('an idle node does not rewrite its status for revisions it does not watch; `status --wait` still knows it is there, and waits for a change it has not applied', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const d = new DaemonProcess({ cluster: 'eu', node: 'a', etcd: { endpoints: [etcd.endpoint] }, status: { leaseTtlSeconds: 30, intervalSeconds: 0.2 } }).start();
  const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args, '--endpoints', etcd.endpoint], { encoding: 'utf8' });
  const statusRevision = async () => JSON.parse((await etcdc.get(`${P}/status/eu/a`).string())!).revision as number;
  try {
    await d.ready();
    const put = await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v1').exec();
    const rev = Number(put.header.revision);
    await until(async () => (await statusRevision()) >= rev, 'status shows the change');
    const shown = await statusRevision();

    // Other clusters' keys and other nodes' status writes move etcd's head; nothing this node watches changes.
    for (let i = 0; i < 20; i++) await etcdc.put(`${P}/clusters/us/configmaps/default/x/k`).value(String(i));
    await etcdc.put(`${P}/status/us/b`).value('{}');
    const head = etcd.revision();
    await sleep(1500); // a second and more of progress answers
    assert.equal(await statusRevision(), shown, 'no rewrite for revisions that changed nothing here');
    const t0 = Date.now();
    const wait = cli('status', '--wait', '--timeout', '10'); // target: the head
    assert.equal(wait.status, 0, wait.stderr);
    assert.match(wait.stdout, new RegExp(`all 1 node\\(s\\) have applied revision ${head}`));
    assert.ok(Date.now() - t0 < 5000, `answered from etcd, not from a rewrite (${Date.now() - t0} ms)`);

    // A change it watches and has not applied (the process stopped): --wait waits for the node, and times out.
    d.send('SIGSTOP');
    const missed = await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v2').exec();
    const late = cli('status', '--wait', '--revision', String(Number(missed.header.revision)), '--timeout', '1.5');
    assert.equal(late.status, 1, 'a node that has not applied a change it watches is waited for');
    assert.match(late.stderr, new RegExp(`eu/a@${shown}`));
    d.send('SIGCONT');
    const after = cli('status', '--wait', '--revision', String(Number(missed.header.revision)), '--timeout', '10');
    assert.equal(after.status, 0, after.stderr);
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
  }
});

test('fleet status: lease-bound keys, `status --json`, `status --wait`, gone after SIGKILL within the TTL and at once after SIGTERM', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const cfg = (node: string) => ({ cluster: 'eu', node, etcd: { endpoints: [etcd.endpoint] }, status: { leaseTtlSeconds: 2, intervalSeconds: 0.2 } });
  const a = new DaemonProcess(cfg('a')).start();
  const b = new DaemonProcess(cfg('b')).start();
  const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args, '--endpoints', etcd.endpoint], { encoding: 'utf8' });
  try {
    await a.ready();
    await b.ready();
    const put = await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v').exec();
    const rev = Number(put.header.revision);
    const wait = cli('status', '--wait', '--revision', String(rev), '--timeout', '10');
    assert.equal(wait.status, 0, wait.stderr);
    assert.match(wait.stdout, new RegExp(`all 2 node\\(s\\) have applied revision ${rev}`));

    const json = JSON.parse(cli('status', '--json').stdout);
    assert.deepEqual(json.nodes.map((n: any) => `${n.cluster}/${n.node}`), ['eu/a', 'eu/b']);
    for (const n of json.nodes) {
      assert.equal(typeof n.revision, 'number');
      assert.ok(n.revision >= rev);
      assert.ok(n.updatedAt && n.objects === 1 && n.errors === 0 && n.ready === true);
    }
    const table = cli('status');
    assert.match(table.stdout, /CLUSTER\s+NODE\s+REVISION\s+LAG/);

    // An unreachable revision times out with exit 1, naming who is behind.
    const late = cli('status', '--wait', '--revision', String(rev + 1000), '--timeout', '0.5');
    assert.equal(late.status, 1);
    assert.match(late.stderr, /timed out waiting for revision .*eu\/a@/);

    // A bad key shows up as an error in status, by path, never with its value.
    await etcdc.put(`${P}/global/configmaps/default/app/..evil`).value('s3cr3t-value');
    await until(() => JSON.parse(cli('status', '--json').stdout).nodes.every((n: any) => n.errors === 1), 'errors in status');
    const withErr = cli('status', '--json').stdout;
    assert.match(withErr, /global\/configmaps\/default\/app\/\.\.evil/);
    assert.ok(!withErr.includes('s3cr3t-value'));

    const t0 = Date.now();
    await a.signal('SIGKILL');
    await until(() => !JSON.parse(cli('status', '--json').stdout).nodes.some((n: any) => n.node === 'a'), 'status gone after SIGKILL', 10_000);
    const gone = Date.now() - t0;
    assert.ok(gone < 2000 + 2000, `gone within the TTL (+ etcd's lease check): ${gone} ms`);
    assert.equal(await b.signal('SIGTERM'), 0);
    assert.deepEqual(JSON.parse(cli('status', '--json').stdout).nodes, [], 'a clean stop revokes the lease at once');
  } finally {
    etcdc.close();
    await a.cleanup();
    await b.cleanup();
    await etcd.stop();
  }
});
