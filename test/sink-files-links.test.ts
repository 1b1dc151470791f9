/**
 * The file sink never follows a link below its roots, through the real daemon:
 * a link where a namespace dir, an object dir, a payload dir or a key is
 * expected, `..data` pointing outside, and the kind root itself replaced by a
 * link after start. Each outside dir is built to look like one of our objects,
 * so a sink that followed the link would treat it as its own and change or
 * delete it. What must hold: everything outside survives byte for byte, the
 * daemon reports the offending path, and other objects keep being written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startEtcd } from './harness/etcd.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';

const P = '/confsync';
const TS = '..2024_01_01_00_00_00_000.AbCdEf';

/** A dir that looks like an owned object dir with key `k`, plus a file that is not ours. */
function objectLike(dir: string): void {
  fs.mkdirSync(path.join(dir, TS), { recursive: true });
  fs.writeFileSync(path.join(dir, TS, 'k'), 'outside');
  fs.symlinkSync(TS, path.join(dir, '..data'));
  fs.symlinkSync('..data/k', path.join(dir, 'k'));
  fs.writeFileSync(path.join(dir, 'precious'), 'keep me');
}

/** Every entry below `dir` with its type and content (links listed, not followed). */
function snapshot(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true })
    .map(String)
    .sort()
    .map((rel) => {
      const p = path.join(dir, rel);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) return `${rel} -> ${fs.readlinkSync(p)}`;
      return st.isDirectory() ? `${rel}/` : `${rel} = ${fs.readFileSync(p, 'utf8')}`;
    });
}

test('links below the files root are never followed: outside dirs survive put and delete, the path is reported', async () => {
  const etcd = await startEtcd();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 2 });
  const outside = path.join(d.dir, 'outside');
  const cm = path.join(d.root, 'configmaps');
  let marks = 0;
  /** Events are applied in order: once a later put is on disk, the earlier ones were handled. */
  const settle = async () => {
    const name = `mark-${++marks}`;
    etcd.ctl('put', `${P}/global/configmaps/marker/${name}/k`, 'x');
    await until(() => readOr(d.file('configmaps', 'marker', name, 'k')) === 'x', `marker ${name}`);
  };
  try {
    // (a) namespace dir is a link to an outside dir holding an object-like `app`.
    objectLike(path.join(outside, 'a', 'app'));
    fs.mkdirSync(cm, { recursive: true });
    fs.symlinkSync(path.join(outside, 'a'), path.join(cm, 'vns'));
    // (b) object dir is a link to an object-like outside dir.
    objectLike(path.join(outside, 'b'));
    fs.mkdirSync(path.join(cm, 'ons'));
    fs.symlinkSync(path.join(outside, 'b'), path.join(cm, 'ons', 'app'));
    // (c) `..data` points outside (absolute), at a dir holding `k`.
    fs.mkdirSync(path.join(outside, 'c'), { recursive: true });
    fs.writeFileSync(path.join(outside, 'c', 'k'), 'outside');
    fs.mkdirSync(path.join(cm, 'dns', 'app'), { recursive: true });
    fs.symlinkSync(path.join(outside, 'c'), path.join(cm, 'dns', 'app', '..data'));
    fs.symlinkSync('..data/k', path.join(cm, 'dns', 'app', 'k'));
    // (d) `..data` names a payload dir that is itself a link to outside.
    fs.mkdirSync(path.join(outside, 'd'), { recursive: true });
    fs.writeFileSync(path.join(outside, 'd', 'k'), 'outside');
    fs.mkdirSync(path.join(cm, 'tns', 'app'), { recursive: true });
    fs.symlinkSync(path.join(outside, 'd'), path.join(cm, 'tns', 'app', TS));
    fs.symlinkSync(TS, path.join(cm, 'tns', 'app', '..data'));
    // (e) a key and a stray name are links to outside files.
    fs.mkdirSync(path.join(outside, 'e'), { recursive: true });
    fs.writeFileSync(path.join(outside, 'e', 'file'), 'outside');
    const before = snapshot(outside);

    d.start();
    await d.ready();
    etcd.ctl('put', `${P}/global/configmaps/kns/app/a`, 'va');
    await until(() => readOr(d.file('configmaps', 'kns', 'app', 'a')) === 'va', 'kns/app written');
    fs.symlinkSync(path.join(outside, 'e', 'file'), path.join(cm, 'kns', 'app', 'k'));
    fs.symlinkSync(path.join(outside, 'e', 'file'), path.join(cm, 'kns', 'app', 'stray'));

    for (const ns of ['vns', 'ons', 'dns', 'tns', 'kns']) etcd.ctl('put', `${P}/global/configmaps/${ns}/app/k`, 'new');
    await settle();
    for (const ns of ['vns', 'ons', 'dns', 'tns', 'kns']) etcd.ctl('del', '--prefix', `${P}/global/configmaps/${ns}/app/`);
    await settle();
    await new Promise((r) => setTimeout(r, 2500)); // a periodic resync and prune on top
    await settle();

    assert.deepEqual(snapshot(outside), before, 'something outside the root was changed through a link');
    for (const link of [path.join(cm, 'vns'), path.join(cm, 'ons', 'app')]) {
      assert.ok(fs.lstatSync(link).isSymbolicLink(), `${link} was replaced`);
      assert.ok(d.log.includes(link) && /link/.test(d.log), `the daemon did not report ${link}`);
    }
    assert.equal(fs.existsSync(path.join(cm, 'dns', 'app')), false, 'dns/app (owned, with a bad ..data) was not removed');
    assert.equal(fs.existsSync(path.join(cm, 'tns', 'app')), false, 'tns/app (owned) was not removed');

    // (f) the kind root itself is replaced by a link to an outside dir after start.
    etcd.ctl('put', `${P}/global/configmaps/rns/app/k`, 'v1');
    await until(() => readOr(d.file('configmaps', 'rns', 'app', 'k')) === 'v1', 'rns/app written');
    objectLike(path.join(outside, 'f', 'rns', 'app'));
    const beforeF = snapshot(outside);
    fs.renameSync(cm, path.join(d.root, 'configmaps.moved'));
    fs.symlinkSync(path.join(outside, 'f'), cm);
    etcd.ctl('put', `${P}/global/configmaps/rns/app/k`, 'v2');
    etcd.ctl('put', `${P}/global/configmaps/rns/new/k`, 'v2');
    etcd.ctl('del', '--prefix', `${P}/global/configmaps/rns/app/`);
    await new Promise((r) => setTimeout(r, 2500)); // the events, retries and a resync
    assert.deepEqual(snapshot(outside), beforeF, 'something outside the root was changed through the kind-root link');
    assert.ok(d.log.includes(`${cm} is a symbolic link`), 'the kind-root link was not reported');

    // Put back by the operator: the daemon converges again.
    fs.unlinkSync(cm);
    fs.renameSync(path.join(d.root, 'configmaps.moved'), cm);
    etcd.ctl('put', `${P}/global/configmaps/rns/app/k`, 'v3');
    await until(() => readOr(d.file('configmaps', 'rns', 'app', 'k')) === 'v3', 'rns/app written after the root came back');
    await until(() => readOr(d.file('configmaps', 'rns', 'new', 'k')) === 'v2', 'rns/new written after the root came back');
    assert.equal(await d.signal('SIGTERM'), 0);
  } finally {
    await d.cleanup();
    await etcd.stop();
  }
});
