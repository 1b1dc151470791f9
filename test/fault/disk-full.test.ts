/**
 * Fault: the files root fills up. The root lives on a size-limited tmpfs
 * (`mount -t tmpfs -o size=1m`; the test runs as root and skips, saying why,
 * where mount is refused). 1 MiB rather than 2: a value must stay under etcd's
 * 1.5 MiB request limit, and a 1.3 MiB value must not fit at all.
 *
 * Checked: the too-big object is reported (sink error naming the object, ENOSPC,
 * also as the status key's lastError), its previous files stay exactly as they
 * were (same `..data` target, same bytes, no half-written payload left behind),
 * other objects go on being applied, and both ways out work: deleting the big
 * value from etcd, and making room (remount bigger) — then the daemon's own
 * retry applies the big value with no change in etcd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../harness/etcd.js';
import { DaemonProcess, readOr, until } from '../harness/daemon.js';
import { logLines } from './etcd-cluster.js';

const P = '/confsync';
const key = (name: string, k: string) => `${P}/global/configmaps/default/${name}/${k}`;

function mount(dir: string, size: string, remount = false): string | undefined {
  const args = remount ? ['-o', `remount,size=${size}`, dir] : ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir];
  const r = spawnSync('mount', args, { encoding: 'utf8' });
  return r.status === 0 ? undefined : `mount ${args.join(' ')} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.error?.message || '').trim()}`;
}

test('files root on a full tmpfs: the too-big object is reported and keeps its last good files, others still apply, recovers after delete or more room', async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-full-'));
  const mnt = path.join(base, 'mnt');
  fs.mkdirSync(mnt);
  const refused = process.getuid?.() !== 0 ? 'not root: cannot mount a tmpfs' : mount(mnt, '1m');
  if (refused) {
    fs.rmSync(base, { recursive: true, force: true });
    return t.skip(refused);
  }
  const root = path.join(mnt, 'root');
  const obj = (name: string) => path.join(root, 'configmaps', 'default', name);
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const daemonDir = path.join(base, 'daemon');
  fs.mkdirSync(daemonDir);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, status: { intervalSeconds: 0.5 }, sinks: { files: { root } } }, daemonDir);
  try {
    await etcdc.put(key('big', 'a')).value('good-1');
    await etcdc.put(key('small-0', 'k')).value('v0');
    d.start();
    await d.ready();
    await until(() => readOr(path.join(obj('big'), 'a')) === 'good-1' && readOr(path.join(obj('small-0'), 'k')) === 'v0', 'seed projected');
    const goodTarget = fs.readlinkSync(path.join(obj('big'), '..data'));
    const userView = (dir: string) => fs.readdirSync(dir).filter((e) => !e.startsWith('..')).sort();
    // One warning when the object starts failing, then a debug line per retry (backoff 1 s, 2 s, 4 s, …).
    const sinkErrors = () => logLines(d.log).filter((l) => /^sink (could not apply object|still failing on object)/.test(l.msg) && l.object === 'configmaps/default/big');

    // (1) 1.3 MiB into a 1 MiB filesystem.
    const blob = randomBytes(1.3 * 1024 * 1024);
    await etcdc.put(key('big', 'blob')).value(blob);
    const [err] = await until(() => sinkErrors().length > 0 && sinkErrors(), 'the sink error for the big object');
    assert.match(err!.err, /ENOSPC/);
    assert.equal(err!.sink, 'files');
    // Other objects still apply, though the big one keeps failing (and retrying) meanwhile.
    await etcdc.put(key('small-0', 'k')).value('v1');
    await etcdc.put(key('small-1', 'k')).value('new');
    await until(() => readOr(path.join(obj('small-0'), 'k')) === 'v1' && readOr(path.join(obj('small-1'), 'k')) === 'new', 'small objects applied while the big one fails', 20_000);
    await until(() => sinkErrors().length >= 3, 'retried', 10_000);
    // The last good files, untouched.
    assert.equal(fs.readlinkSync(path.join(obj('big'), '..data')), goodTarget);
    assert.deepEqual(userView(obj('big')), ['a']);
    assert.equal(readOr(path.join(obj('big'), 'a')), 'good-1');
    const status = await until(() => {
      const out = etcd.ctl('get', '--print-value-only', `${P}/status/eu/n1`).trim();
      return out && JSON.parse(out).lastError?.path === 'files:configmaps/default/big' ? JSON.parse(out) : undefined;
    }, 'status lastError names the object');
    assert.match(status.lastError.reason, /ENOSPC/);
    assert.ok(d.running);
    const errorsWhileFull = sinkErrors().length;

    // (2) Way out 1: delete the big value from etcd. The retries stop, the object is writable again.
    await etcdc.delete().key(key('big', 'blob'));
    await sleep(2500);
    const settled = sinkErrors().length;
    await sleep(2500);
    assert.equal(sinkErrors().length, settled, 'no more sink errors once the value is gone');
    await etcdc.put(key('big', 'a')).value('good-2');
    await until(() => readOr(path.join(obj('big'), 'a')) === 'good-2', 'big object applies again');
    assert.deepEqual(userView(obj('big')), ['a']);
    // The old payload dir is removed right after the swap (step 7): wait for it rather than race it.
    const dotEntries = () => fs.readdirSync(obj('big')).filter((e) => e.startsWith('..'));
    await until(() => dotEntries().length === 2, `no half-written payload left: ${dotEntries()}`, 3000);

    // (3) Way out 2: too big again, then make room. The daemon's retry applies it; etcd is not touched.
    await etcdc.put(key('big', 'blob')).value(blob);
    await until(() => sinkErrors().length > settled, 'too big again');
    const remounted = mount(mnt, '4m', true);
    assert.equal(remounted, undefined, remounted);
    const t0 = Date.now();
    await until(() => {
      const got = fs.existsSync(path.join(obj('big'), 'blob')) ? fs.readFileSync(path.join(obj('big'), 'blob')) : undefined;
      return got?.equals(blob);
    }, 'the big value once there is room', 15_000);
    const recoveredMs = Date.now() - t0;
    assert.equal(readOr(path.join(obj('big'), 'a')), 'good-2');
    await until(() => dotEntries().length === 2, `only ..data and the current payload dir: ${dotEntries()}`, 3000);
    assert.ok(d.running);
    const others = logLines(d.log).filter((l) => /^sink (could not apply object|still failing on object)/.test(l.msg) && l.object !== 'configmaps/default/big');
    t.diagnostic(`other objects that hit ENOSPC while the big one was filling the disk, then applied on retry: ${others.length ? others.map((l) => l.object).join(', ') : 'none'}`);
    t.diagnostic(`1.3 MiB value on a 1 MiB tmpfs: ${errorsWhileFull} sink errors (ENOSPC, retried every second) before the delete; small objects applied meanwhile; after remount to 4 MiB the retry applied it in ${recoveredMs} ms`);
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
    const u = spawnSync('umount', [mnt], { encoding: 'utf8' });
    if (u.status !== 0) spawnSync('umount', ['-l', mnt]);
    fs.rmSync(base, { recursive: true, force: true });
  }
});
