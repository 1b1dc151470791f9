/**
 * The encrypted local snapshot through the real daemon and a real etcd (issue 13
 * item 2): a start with etcd down serves the last applied state from
 * `<stateDir>/snapshot` (files re-created, /readyz 503, status `offline` once etcd
 * is back); etcd back with the revision still held → the watch resumes with no
 * full list (log and metric say so) and the changes made meanwhile arrive, the
 * replay guard still holding; compacted past it → a re-list that prunes; a
 * tampered snapshot or another cluster's → one line, ignored; no identity → no
 * snapshot. No secret value's bytes ever in the state dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { freePort } from './harness/ports.js';
import { runCli } from './harness/cli.js';

const P = '/confsync';
const T0 = Date.now() - 3_600_000;
const SECRETS = { older: 'pw-older-9f1c37', newer: 'pw-newer-51ab2e', late: 'pw-late-c0ffee' };
const CONFIG = { v1: 'cfg-value-one-4d2a', v2: 'cfg-value-two-88e1' };

async function setup() {
  const etcd = await startEtcd();
  const id = generateIdentity();
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-key-'));
  const idFile = path.join(keyDir, 'eu.key');
  await writeIdentityFile(idFile, id);
  const port = await freePort();
  const r = [recipientOf(id.publicKey)];
  const sealAt = (v: string, logical: string, t: number) => seal(Buffer.from(v), logical, r, undefined, { now: () => t });
  return { etcd, idFile, keyDir, port, sealAt };
}

const metric = async (port: number, name: string) => {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
};
const readyz = async (port: number) => {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.text() };
};

/** Every file under `dir`, with the number of times each needle's bytes occur in it. */
function grepDir(dir: string, needles: string[]): string[] {
  const hits: string[] = [];
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const bytes = fs.readFileSync(path.join(e.parentPath, e.name));
    for (const n of needles) if (bytes.includes(Buffer.from(n))) hits.push(`${e.name}: ${n}`);
  }
  return hits;
}

const snapshotFile = (d: DaemonProcess) => path.join(d.dir, 'state', 'snapshot');

async function stopCleanly(d: DaemonProcess) {
  assert.equal(await d.signal('SIGTERM'), 0);
}

test('etcd down at start: served from the snapshot; etcd back with the revision held: resumed without a list, changes arrive, replay still refused', async () => {
  const { etcd, idFile, keyDir, port, sealAt } = await setup();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, metrics: { listen: `127.0.0.1:${port}` }, status: { intervalSeconds: 0.2 } });
  const pw = 'global/secrets/default/db/password';
  try {
    d.start();
    await d.ready();
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, CONFIG.v1);
    etcd.ctl('put', `${P}/global/configmaps/default/gone/k`, 'to-be-deleted');
    etcd.ctl('put', `${P}/${pw}`, await sealAt(SECRETS.newer, pw, T0 + 1000));
    await until(() => readOr(d.file('secrets', 'default', 'db', 'password')) === SECRETS.newer, 'secret applied');
    await until(() => readOr(d.file('configmaps', 'default', 'gone', 'k')) === 'to-be-deleted', 'config applied');
    await until(() => fs.existsSync(snapshotFile(d)), 'snapshot written');
    await stopCleanly(d);
    const st = fs.statSync(snapshotFile(d));
    assert.equal((st.mode & 0o777).toString(8), '600');
    assert.equal((fs.statSync(path.join(d.dir, 'state')).mode & 0o777).toString(8), '700');

    // Meanwhile, in etcd: a change, a delete, a new object, and an OLDER envelope put back (a replay).
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, CONFIG.v2);
    etcd.ctl('del', `${P}/global/configmaps/default/gone/k`);
    etcd.ctl('put', `${P}/global/secrets/default/late/password`, await sealAt(SECRETS.late, 'global/secrets/default/late/password', T0 + 5));
    etcd.ctl('put', `${P}/${pw}`, await sealAt(SECRETS.older, pw, T0));
    await etcd.kill();
    // A reboot: plaintext secrets lived on tmpfs and are gone; the replay marks file was lost too.
    fs.rmSync(path.join(d.root, 'secrets'), { recursive: true, force: true });
    fs.rmSync(path.join(d.dir, 'state', 'highwater.json'), { force: true });

    d.log = '';
    d.start();
    // (A generous bound: a process start on a loaded 2-core machine took up to 15 s. Speed: bench/snapshot.ts.)
    await until(() => readOr(d.file('secrets', 'default', 'db', 'password')) === SECRETS.newer, 'secret re-created from the snapshot', 60_000);
    assert.equal(readOr(d.file('configmaps', 'default', 'app', 'k')), CONFIG.v1, 'config as last applied');
    assert.match(d.log, /"msg":"etcd not reachable at start; serving from the local snapshot/);
    assert.ok(!d.log.includes('status lease lost'), 'no lease existed to lose: the status line says etcd does not answer');
    await until(() => d.log.includes('"msg":"status not written: etcd does not answer'), 'status write refused, said');
    assert.equal(d.log.split('\n').filter((l) => l.includes('"level":30') && l.includes('"msg":"status not written: etcd does not answer')).length, 1, 'said once at info (retries at debug)');
    await until(async () => (await metric(port, 'confsync_start_mode_total{mode="offline"}')) === 1, 'offline start counted');
    const r = await readyz(port);
    assert.equal(r.status, 503);
    assert.match(r.body, /serving from the local snapshot \(revision \d+\) since /);

    // etcd back: the watch resumes from the snapshot's revision; no full list.
    await etcd.start();
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === CONFIG.v2, 'change made meanwhile applied');
    await until(() => readOr(d.file('secrets', 'default', 'late', 'password')) === SECRETS.late, 'new object applied');
    await until(() => readOr(d.file('configmaps', 'default', 'gone', 'k')) === undefined, 'deleted object removed');
    await until(() => d.log.includes('"msg":"first full sync: '), 'synced');
    assert.match(d.log, /"msg":"etcd still holds the local snapshot revision; resuming the watch from it, no full list"/);
    assert.ok(!d.log.includes('listed etcd'), 'no full list:\n' + d.log.split('\n').filter((l) => /listed etcd|snapshot|compact|state/.test(l)).join('\n'));
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="snapshot-resume"}'), 1);
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="list"}'), 0);
    assert.equal(await metric(port, 'confsync_etcd_relists_total'), 0);
    // The replay put back meanwhile is refused (the marks came back from the snapshot); the newer value stays.
    await until(() => d.log.includes(`"path":"${pw}","reason":"envelope refused as a replay`), 'replay refused');
    assert.equal(readOr(d.file('secrets', 'default', 'db', 'password')), SECRETS.newer);
    await until(async () => (await readyz(port)).status === 200, 'ready once etcd confirmed');
    const status = await until(() => {
      const out = etcd.ctl('get', '--print-value-only', `${P}/status/eu/n1`).trim();
      return out && JSON.parse(out).offline?.until ? JSON.parse(out) : undefined;
    }, 'status says it was offline');
    assert.ok(Date.parse(status.offline.since) <= Date.parse(status.offline.until));
    assert.equal(status.state, 'watching');
    // The operator's view: `confsync status` (text) says when it went offline and when it came back.
    const text = runCli(['status'], { cwd: d.dir, endpoint: etcd.endpoint });
    assert.equal(text.code, 0, text.stderr);
    assert.ok(
      text.stdout.includes(`eu/n1: offline since ${status.offline.since}, served from its local snapshot (revision ${status.offline.revision}); back online since ${status.offline.until}`),
      text.stdout,
    );

    // The snapshot follows the new state; nothing secret in the state dir, ever.
    const rev = etcd.revision();
    // What the catch-up moved is appended to the journal of the snapshot this start loaded: the full file is not written again.
    const journal = `${snapshotFile(d)}.journal`;
    await until(() => fs.existsSync(journal) && fs.statSync(journal).mtimeMs > st.mtimeMs, 'the catch-up recorded in the snapshot journal');
    assert.ok(rev > 0);
    await stopCleanly(d);
    assert.equal(fs.statSync(snapshotFile(d)).mtimeMs, st.mtimeMs, 'the full snapshot was written again after a start that loaded it');
    assert.equal((fs.statSync(journal).mode & 0o777).toString(8), '600');
    assert.deepEqual(grepDir(path.join(d.dir, 'state'), [...Object.values(SECRETS), ...Object.values(CONFIG)]), []);
    assert.deepEqual(Object.values(SECRETS).filter((s) => d.log.includes(s)), [], 'no plaintext in the log');
  } finally {
    await d.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('etcd up at restart: the watch resumes from the snapshot (no list); its marks refuse a replay made while the daemon was down, highwater.json lost', async () => {
  const { etcd, idFile, keyDir, port, sealAt } = await setup();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, metrics: { listen: `127.0.0.1:${port}` } });
  const pw = 'global/secrets/default/db/password';
  try {
    d.start();
    await d.ready();
    etcd.ctl('put', `${P}/${pw}`, await sealAt(SECRETS.newer, pw, T0 + 1000));
    await until(() => readOr(d.file('secrets', 'default', 'db', 'password')) === SECRETS.newer, 'secret applied');
    await stopCleanly(d);
    etcd.ctl('put', `${P}/${pw}`, await sealAt(SECRETS.older, pw, T0));
    fs.rmSync(path.join(d.dir, 'state', 'highwater.json'));
    d.log = '';
    d.start();
    await d.ready();
    assert.match(d.log, /"msg":"etcd still holds the local snapshot revision; resuming the watch from it, no full list"/);
    assert.ok(!d.log.includes('listed etcd'));
    assert.ok(!d.log.includes('serving from the local snapshot'));
    await until(() => d.log.includes(`"path":"${pw}","reason":"envelope refused as a replay`), 'replay refused');
    assert.equal(readOr(d.file('secrets', 'default', 'db', 'password')), SECRETS.newer);
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="snapshot-resume"}'), 1);
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="offline"}'), 0);
    await stopCleanly(d);
  } finally {
    await d.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('compacted past the snapshot revision: re-listed (log and metric say so), deleted objects pruned', async () => {
  const { etcd, idFile, keyDir, port } = await setup();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, metrics: { listen: `127.0.0.1:${port}` } });
  try {
    d.start();
    await d.ready();
    for (const n of ['a', 'b', 'c']) etcd.ctl('put', `${P}/global/configmaps/default/${n}/k`, `v-${n}`);
    await until(() => readOr(d.file('configmaps', 'default', 'c', 'k')) === 'v-c', 'applied');
    await until(() => fs.existsSync(snapshotFile(d)), 'snapshot written');
    await stopCleanly(d);
    etcd.ctl('del', `${P}/global/configmaps/default/b/k`);
    etcd.ctl('put', `${P}/global/configmaps/default/a/k`, 'v-a2');
    etcd.ctl('compact', String(etcd.revision()));
    await etcd.kill();

    d.log = '';
    d.start();
    await until(() => d.log.includes('serving from the local snapshot'), 'offline start');
    assert.equal(readOr(d.file('configmaps', 'default', 'b', 'k')), 'v-b', 'nothing pruned while offline');
    await etcd.start();
    await until(() => readOr(d.file('configmaps', 'default', 'b', 'k')) === undefined, 'deleted object pruned after the re-list');
    await until(() => readOr(d.file('configmaps', 'default', 'a', 'k')) === 'v-a2', 'change applied');
    assert.match(d.log, /"msg":"etcd compacted past the local snapshot revision; listing"/);
    assert.match(d.log, /"msg":"listed etcd; reconciling everything"/);
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="list"}'), 1);
    assert.equal(await metric(port, 'confsync_start_mode_total{mode="snapshot-resume"}'), 0);
    assert.equal(readOr(d.file('configmaps', 'default', 'c', 'k')), 'v-c');
    await stopCleanly(d);
  } finally {
    await d.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('etcd restored from a backup and written past the snapshot revision: another history, so listed, not resumed', async () => {
  const { etcd, idFile, keyDir } = await setup();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile });
  const backup = `${etcd.dataDir}-backup`;
  const restore = async () => {
    await etcd.kill();
    fs.rmSync(etcd.dataDir, { recursive: true, force: true });
    fs.cpSync(backup, etcd.dataDir, { recursive: true });
    await etcd.start();
  };
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/a/k`, 'v1');
    await etcd.kill();
    fs.cpSync(etcd.dataDir, backup, { recursive: true }); // the backup, at revision B
    await etcd.start();
    d.start();
    await d.ready();
    etcd.ctl('put', `${P}/global/configmaps/default/a/k`, 'v2');
    etcd.ctl('put', `${P}/global/configmaps/default/b/k`, 'only-in-the-lost-history');
    await until(() => readOr(d.file('configmaps', 'default', 'b', 'k')) !== undefined, 'applied');
    await stopCleanly(d);
    const snapRev = etcd.revision();
    await restore();
    // The restored etcd's own history: a change below the snapshot's revision, then past it.
    etcd.ctl('put', `${P}/global/configmaps/default/a/k`, 'v3-restored-history');
    while (etcd.revision() <= snapRev + 1) etcd.ctl('put', '/elsewhere/pad', 'x');
    d.log = '';
    d.start();
    await d.ready();
    assert.match(d.log, /"msg":"etcd's state at the local snapshot's revision is not the snapshot's \(etcd restored from a backup, or another etcd\?\); not resuming/);
    assert.ok(d.log.includes('listed etcd'));
    await until(() => readOr(d.file('configmaps', 'default', 'a', 'k')) === 'v3-restored-history', "the restored etcd's value");
    await until(() => readOr(d.file('configmaps', 'default', 'b', 'k')) === undefined, 'a key the restored etcd lacks is pruned');
    await stopCleanly(d);
  } finally {
    await d.cleanup();
    fs.rmSync(backup, { recursive: true, force: true });
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('a tampered snapshot, or another cluster\'s: one line, ignored, a normal start', async () => {
  const { etcd, idFile, keyDir } = await setup();
  const eu = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile });
  const us = new DaemonProcess({ cluster: 'us', etcd: { endpoints: [etcd.endpoint] }, identity: idFile });
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, 'v1');
    eu.start();
    await eu.ready();
    await until(() => fs.existsSync(snapshotFile(eu)), 'snapshot written');
    await stopCleanly(eu);
    const good = fs.readFileSync(snapshotFile(eu));

    // Another cluster's snapshot (same identity): refused by its header, before any decryption.
    fs.mkdirSync(path.join(us.dir, 'state'), { recursive: true, mode: 0o700 });
    fs.writeFileSync(snapshotFile(us), good, { mode: 0o600 });
    us.start();
    await us.ready();
    const usLine = us.log.split('\n').filter((l) => l.includes('local snapshot ignored'));
    assert.equal(usLine.length, 1);
    assert.match(usLine[0]!, /written for cluster \\"eu\\" prefix \\"\/confsync\\", not this daemon's cluster \\"us\\"/);
    assert.ok(us.log.includes('listed etcd'));
    await until(() => readOr(us.file('configmaps', 'default', 'app', 'k')) === 'v1', 'us synced normally');
    await stopCleanly(us);

    // One flipped byte in the ciphertext: does not authenticate.
    const bad = Buffer.from(good);
    bad[bad.length - 40] ^= 1;
    fs.writeFileSync(snapshotFile(eu), bad);
    eu.log = '';
    eu.start();
    await eu.ready();
    const euLine = eu.log.split('\n').filter((l) => l.includes('local snapshot ignored'));
    assert.equal(euLine.length, 1);
    assert.match(euLine[0]!, /does not authenticate/);
    assert.ok(!/"stack"/.test(euLine[0]!));
    assert.ok(eu.log.includes('listed etcd'));
    assert.ok(fs.existsSync(`${snapshotFile(eu)}.bad`), 'kept aside for inspection');
    await until(() => fs.existsSync(snapshotFile(eu)), 'a fresh snapshot written');
    await stopCleanly(eu);
  } finally {
    await eu.cleanup();
    await us.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('no identity: no snapshot file, said once at info level', async () => {
  const etcd: EtcdHandle = await startEtcd();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] } });
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, 'v1');
    d.start();
    await d.ready();
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v1', 'applied');
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, 'v2');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v2', 'applied again');
    await stopCleanly(d);
    assert.equal(fs.existsSync(snapshotFile(d)), false);
    const lines = d.log.split('\n').filter((l) => l.includes('no identity configured: no local snapshot'));
    assert.equal(lines.length, 1);
    assert.equal(JSON.parse(lines[0]!).level, 30);
  } finally {
    await d.cleanup();
    await etcd.stop();
  }
});

test('stateDir: an existing 0755 dir (a systemd StateDirectory=) is tightened to 0700; one inside the files root is warned about and left as it is', async () => {
  const { etcd, idFile, keyDir } = await setup();
  const own = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-d-'));
  const inRoot = path.join(dir, 'out', '.state');
  const shared = new DaemonProcess({ cluster: 'eu', node: 'n2', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, stateDir: inRoot }, dir);
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/app/k`, 'v1');
    for (const d of [path.join(own.dir, 'state'), inRoot]) {
      fs.mkdirSync(d, { recursive: true });
      fs.chmodSync(d, 0o755);
    }
    own.start();
    shared.start();
    await own.ready();
    await shared.ready();
    assert.equal((fs.statSync(path.join(own.dir, 'state')).mode & 0o777).toString(8), '700');
    assert.match(own.log, /"msg":"state dir tightened to 0700"/);
    assert.ok(!own.log.includes('inside a files root'));

    const warn = shared.log.split('\n').filter((l) => l.includes('stateDir is inside a files root that others read'));
    assert.equal(warn.length, 1);
    assert.match(warn[0]!, /set stateDir to a dir of its own \(default \/var\/lib\/confsync-state/);
    assert.equal((fs.statSync(inRoot).mode & 0o777).toString(8), '755', 'a dir readers use keeps its mode');
    await until(() => fs.existsSync(path.join(inRoot, 'snapshot')), 'snapshot still kept there');
    await stopCleanly(own);
    await stopCleanly(shared);
  } finally {
    await own.cleanup();
    await shared.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});
