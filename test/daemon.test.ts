import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from './harness/etcd.js';
import { startProxy } from './harness/proxy.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';
import { withDaemon } from './harness/fixture.js';
import { walk } from './harness/walk.js';

const P = '/confsync';


test('put → file, override precedence, other clusters ignored, del → gone; SIGTERM exits 0', async () => {
  await withDaemon({ cluster: 'eu' }, async ({ etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/app/a`).value('global-a');
    await etcdc.put(`${P}/global/configmaps/default/app/b`).value('global-b');
    await etcdc.put(`${P}/clusters/eu/configmaps/default/app/b`).value('eu-b');
    await etcdc.put(`${P}/clusters/us/configmaps/default/app/b`).value('us-b');
    await etcdc.put(`${P}/clusters/us/configmaps/default/us-only/k`).value('x');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'b')) === 'eu-b', 'cluster override');
    assert.equal(readOr(d.file('configmaps', 'default', 'app', 'a')), 'global-a');
    assert.equal(fs.existsSync(d.file('configmaps', 'default', 'us-only')), false, "another cluster's object is never materialized");
    assert.equal((fs.statSync(d.file('configmaps', 'default', 'app', 'a')).mode & 0o777).toString(8), '644');

    // Removing the override falls back to the global value; removing everything removes the dir.
    await etcdc.delete().key(`${P}/clusters/eu/configmaps/default/app/b`);
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'b')) === 'global-b', 'fallback to global');
    await etcdc.delete().prefix(`${P}/global/configmaps/default/app/`);
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'app')), 'object removed');

    assert.equal(await d.signal('SIGTERM'), 0);
    assert.match(d.log, /"msg":"stopped"/);
  });
});

test('SIGKILL, changes while down, restart → converges (new keys written, deleted objects pruned)', async () => {
  await withDaemon({ cluster: 'eu' }, async ({ etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/keep/k`).value('v1');
    await etcdc.put(`${P}/global/configmaps/default/drop/k`).value('v1');
    await until(() => readOr(d.file('configmaps', 'default', 'drop', 'k')) === 'v1', 'initial files');
    assert.equal(await d.signal('SIGKILL'), null);

    await etcdc.put(`${P}/global/configmaps/default/keep/k`).value('v2');
    await etcdc.put(`${P}/global/configmaps/default/new/k`).value('v1');
    await etcdc.delete().prefix(`${P}/global/configmaps/default/drop/`);
    fs.mkdirSync(path.join(d.root, 'configmaps', 'default', 'not-ours'), { recursive: true });
    fs.writeFileSync(path.join(d.root, 'configmaps', 'default', 'not-ours', 'k'), 'hand made');

    d.start();
    await until(() => readOr(d.file('configmaps', 'default', 'keep', 'k')) === 'v2', 'updated while down');
    await until(() => readOr(d.file('configmaps', 'default', 'new', 'k')) === 'v1', 'created while down');
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'drop')), 'pruned while down');
    assert.equal(readOr(path.join(d.root, 'configmaps', 'default', 'not-ours', 'k')), 'hand made', 'a directory without our marker is never touched');
    assert.equal(await d.signal('SIGTERM'), 0);
  });
});

test('invalid-key corpus: each reported by path (daemon log, or lint outside its scopes), nothing written outside the root, daemon keeps working', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] } }).start();
  const bad = [
    'global/configmaps/default/app/..sneaky.txt',
    'global/configmaps/default/app/..data',
    'global/configmaps/default/app/.',
    'global/configmaps/default/app/..',
    'global/configmaps/default/../etc/passwd',
    'global/configmaps/../../etc/k',
    'global/configmaps/default/a/b/c',
    'global/configmaps/Default/app/k',
    'global/configmaps/default/App/k',
    'global/configmaps/default/app/with space',
    'global/configmaps/default/app/nul\u0000byte',
    'global/configmaps/default/app/' + 'k'.repeat(254),
    'global/configmaps/' + 'n'.repeat(64) + '/app/k',
    'global/widgets/default/app/k',
    'global/configmaps/default',
    'clusters/EU/configmaps/default/app/k',
    'clusters//configmaps/default/app/k',
    'elsewhere/k',
    'global/configmaps/default/app/%2e%2e',
  ];
  try {
    await d.ready();
    for (const k of bad) await etcdc.put(`${P}/${k}`).value('evil');
    await etcdc.put(`${P}/global/configmaps/default/good/k`).value('fine');
    await until(() => readOr(d.file('configmaps', 'default', 'good', 'k')) === 'fine', 'the good key');
    // Every bad key the daemon reads (global/, clusters/eu/) is reported by its path, control bytes escaped.
    const shown = (k: string) => JSON.stringify(k.replace(/\u0000/g, '\\x00')).slice(1, -1);
    const inScope = bad.filter((k) => k.startsWith('global/') || k.startsWith('clusters/eu/'));
    assert.ok(inScope.length >= 15);
    await until(() => inScope.every((k) => d.log.includes(shown(k))), 'every bad key in scope reported by path');
    // The rest it never reads (least privilege); `confsync lint` reports every one.
    const { spawnSync } = await import('node:child_process');
    const { MAIN } = await import('./harness/daemon.js');
    const lint = spawnSync(process.execPath, [MAIN, 'lint', '--endpoints', etcd.endpoint], { encoding: 'utf8' });
    assert.equal(lint.status, 1, lint.stderr);
    for (const k of bad) assert.ok(lint.stdout.includes(`${k.replace(/\u0000/g, '\\x00')}: `), `lint reports ${k.slice(0, 60)}`);
    assert.match(lint.stderr, new RegExp(`: ${bad.length} problem\\(s\\)`));
    const written = walk(d.dir).filter((p) => !p.startsWith(d.root + '/') && p !== d.root && p !== d.configFile);
    assert.deepEqual(written, [], 'nothing outside the root');
    const inRoot = walk(d.root).filter((p) => !p.includes('/..')).map((p) => path.relative(d.root, p));
    assert.deepEqual(inRoot.sort(), ['configmaps', 'configmaps/default', 'configmaps/default/good', 'configmaps/default/good/k', 'secrets']);
    assert.ok(d.running, 'daemon alive');
    // And it still applies changes.
    await etcdc.put(`${P}/global/configmaps/default/good/k`).value('still fine');
    await until(() => readOr(d.file('configmaps', 'default', 'good', 'k')) === 'still fine', 'later put');
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
  }
});

test('bad @meta keeps the last good state; fixing it applies', async () => {
  await withDaemon({ cluster: 'eu', labels: { region: 'eu' } }, async ({ etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v1');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v1', 'v1');
    await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value('{not json');
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v2');
    await until(() => d.log.includes('@meta is not valid JSON'), 'meta reported');
    await sleep(200);
    assert.equal(readOr(d.file('configmaps', 'default', 'app', 'k')), 'v1', 'last good state kept');
    // Placement that excludes this cluster removes the object here.
    await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value(JSON.stringify({ placement: { clusterSelector: { matchLabels: { region: 'us' } } } }));
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'app')), 'excluded by placement');
    await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value(JSON.stringify({ placement: { clusters: ['e*'] } }));
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v2', 'placed again with the latest value');
  });
});

test('compaction while cut off → re-list; objects deleted meanwhile are pruned', async () => {
  const etcd = await startEtcd();
  const proxy = await startProxy(etcd.endpoint);
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [proxy.endpoint] } }).start();
  try {
    await d.ready();
    await etcdc.put(`${P}/global/configmaps/default/gone/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/stays/k`).value('1');
    await until(() => fs.existsSync(d.file('configmaps', 'default', 'gone', 'k')), 'initial');
    proxy.cut();
    await etcdc.delete().prefix(`${P}/global/configmaps/default/gone/`);
    await etcdc.put(`${P}/global/configmaps/default/stays/k`).value('2');
    etcd.ctl('compact', String(etcd.revision()));
    await sleep(300);
    assert.ok(fs.existsSync(d.file('configmaps', 'default', 'gone', 'k')), 'an outage prunes nothing');
    proxy.restore();
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'gone')), 'pruned after re-list');
    await until(() => readOr(d.file('configmaps', 'default', 'stays', 'k')) === '2', 'updated after re-list');
    assert.match(d.log, /compacted past our revision; re-listing/);
    // The start's heap pacing ended after the first sync, and a re-list armed it again until its sync was done.
    await until(() => (d.log.match(/"msg":"start-up heap pacing done"/g) ?? []).length === 2, 'heap pacing ended after the first sync and after the re-list');
  } finally {
    etcdc.close();
    await d.cleanup();
    await proxy.close();
    await etcd.stop();
  }
});

test('etcd killed: last good files stay; after restart the next put still arrives', async () => {
  await withDaemon({ cluster: 'eu' }, async ({ etcd, etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('before');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'before', 'before');
    await etcd.kill('SIGKILL');
    await sleep(1500);
    assert.equal(readOr(d.file('configmaps', 'default', 'app', 'k')), 'before');
    assert.ok(d.running);
    await etcd.start();
    const t0 = Date.now();
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('after');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'after', 'after restart', 10_000);
    assert.ok(Date.now() - t0 < 10_000);
  });
});

test('plan lists creates, updates and deletes through the reconcile path, changing nothing', async () => {
  const { spawnSync } = await import('node:child_process');
  const { MAIN } = await import('./harness/daemon.js');
  await withDaemon({ cluster: 'eu' }, async ({ etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/same/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/changed/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/removed/k`).value('1');
    await until(() => fs.existsSync(d.file('configmaps', 'default', 'removed', 'k')), 'initial');
    await d.signal('SIGTERM');
    await etcdc.put(`${P}/global/configmaps/default/changed/k`).value('2');
    await etcdc.put(`${P}/global/configmaps/default/added/k`).value('1');
    await etcdc.delete().prefix(`${P}/global/configmaps/default/removed/`);
    const before = walk(d.root).sort();
    const r = spawnSync(process.execPath, [MAIN, 'plan', '--config', d.configFile], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, -1).map((l) => l.split(/\s+/).join(' ')), [
      'create files configmaps/default/added',
      'update files configmaps/default/changed',
      'delete files configmaps/default/removed',
    ]);
    assert.match(lines.at(-1)!, /3 change\(s\), 3 object\(s\) desired on cluster eu/);
    assert.deepEqual(walk(d.root).sort(), before, 'plan changed nothing on disk');
    assert.equal(readOr(d.file('configmaps', 'default', 'changed', 'k')), '1');
  });
});
