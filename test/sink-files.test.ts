import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import fs, { statfsSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { DesiredObject } from '../src/desired/types.js';
import { objectId, type ObjectKind } from '../src/keyspace.js';
import { createLogger } from '../src/log.js';
import { FileSink, keyProblem, segmentProblem, warnIfPersistent, type FileSinkOptions } from '../src/sink/files.js';
import { fsTypeAt, parseMounts } from '../src/sink/files-paths.js';
import { isIgnored } from '../src/sink/files-drift.js';
import { versionedValue } from './helpers/versioned-value.js';

const logger = createLogger('silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function desired(kind: ObjectKind, namespace: string, name: string, data: Record<string, string | Buffer>): DesiredObject {
  return {
    id: objectId(kind, namespace, name),
    kind,
    namespace,
    name,
    data: new Map(Object.entries(data).map(([k, v]) => [k, Buffer.isBuffer(v) ? v : Buffer.from(v)])),
    labels: {},
    annotations: {},
    revision: 1,
    hash: '',
  };
}

/** A fresh temp parent with `root` below it (root itself not created). */
async function scratch(t: { after: (fn: () => Promise<void>) => void }) {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'confsync-files-'));
  t.after(() => rm(parent, { recursive: true, force: true }));
  const root = path.join(parent, 'root');
  return { parent, root, sink: (o: Partial<FileSinkOptions> = {}) => new FileSink({ root, logger, ...o }) };
}

/** Every entry below `dir` (links not followed) with its type and mode. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const p = path.join(dir, name);
    const st = await lstat(p);
    const type = st.isSymbolicLink() ? `-> ${await readlink(p)}` : st.isDirectory() ? 'dir' : 'file';
    out.push(`${prefix}${name} ${type} ${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) out.push(...(await walk(p, `${prefix}${name}/`)));
  }
  return out;
}

const mode = async (p: string) => (await stat(p)).mode & 0o7777;

const INVALID_KEYS = ['', '.', '..', '..sneaky.txt', '..data', '...', 'hello/../etc/passwd', 'a/../../etc', '/etc/passwd', 'foo\0bar', 'a'.repeat(254), 'a b', 'back\\slash', 'ünï'];
const VALID_KEYS = ['.dotfile', 'config.yaml', 'a-b_c.d', 'a..b', 'A', 'a'.repeat(253)];
const INVALID_SEGMENTS = ['', '.', '..', '..sneaky', 'hello/../etc', '/etc', 'a/b', 'nul\0', 'a'.repeat(254)];

test('keyProblem and segmentProblem: kubelet path cases', () => {
  for (const key of INVALID_KEYS) assert.ok(keyProblem(key), `key ${JSON.stringify(key)} should be refused`);
  for (const key of VALID_KEYS) assert.equal(keyProblem(key), undefined, `key ${JSON.stringify(key)} should be accepted`);
  for (const seg of INVALID_SEGMENTS) assert.ok(segmentProblem(seg), `segment ${JSON.stringify(seg)} should be refused`);
  for (const seg of ['default', 'my-app.v2', 'a'.repeat(253)]) assert.equal(segmentProblem(seg), undefined);
});

test('invalid keys and names: apply throws naming id and key, nothing is written', async (t) => {
  const { parent, sink } = await scratch(t);
  const s = sink();
  const before = await walk(parent);
  for (const key of INVALID_KEYS) {
    for (const kind of ['configmaps', 'secrets'] as const) {
      const obj = desired(kind, 'ns', 'app', { ok: 'fine', [key]: 'TOP-SECRET-VALUE' });
      await assert.rejects(s.apply(obj), (err: Error) => {
        assert.match(err.message, new RegExp(`${kind}/ns/app`));
        assert.ok(err.message.includes(JSON.stringify(key)), err.message);
        assert.ok(!err.message.includes('TOP-SECRET-VALUE'));
        return true;
      });
    }
  }
  for (const seg of INVALID_SEGMENTS) {
    await assert.rejects(s.apply(desired('configmaps', seg, 'app', { k: 'v' })), /invalid namespace/);
    await assert.rejects(s.apply(desired('secrets', 'ns', seg, { k: 'v' })), /invalid name/);
    await assert.rejects(s.remove(`configmaps/ns/${seg}`));
  }
  const liar = { ...desired('configmaps', 'ns', 'app', { k: 'v' }), id: 'configmaps/../../etc' };
  await assert.rejects(s.apply(liar), /does not match/);
  assert.deepEqual(await walk(parent), before);
});

test('round trip: configmap files, modes, ..data link, binary bytes', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const binary = Buffer.from([0, 255, 1, 254, 0x80, 0x0a, 0x0d]);
  assert.equal(await s.apply(desired('configmaps', 'default', 'app', { 'config.yaml': 'a: 1\n', '.dotfile': '', 'blob.bin': binary })), 'written');
  const dir = path.join(root, 'configmaps/default/app');
  assert.equal(await readFile(path.join(dir, 'config.yaml'), 'utf8'), 'a: 1\n');
  assert.equal((await readFile(path.join(dir, '.dotfile'))).length, 0);
  assert.deepEqual(await readFile(path.join(dir, 'blob.bin')), binary);
  assert.match(await readlink(path.join(dir, '..data')), /^\.\.\d{4}(_\d\d){5}_\d{3}\.[0-9a-f]{16}\.[A-Za-z0-9]{6}$/);
  for (const key of ['config.yaml', '.dotfile', 'blob.bin']) {
    assert.equal(await readlink(path.join(dir, key)), `..data/${key}`);
    assert.equal(await mode(path.join(dir, key)), 0o644);
  }
  assert.equal(await mode(dir), 0o755);
  assert.equal(await mode(path.join(dir, '..data')), 0o755);
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('..')).length, 2); // ..data + one ts dir
});

test('secrets: 0400 files in 0700 dirs under secretsRoot, separate from configmaps', async (t) => {
  const { root, parent, sink } = await scratch(t);
  const s = sink();
  await s.apply(desired('secrets', 'prod', 'db', { password: 'hunter2' }));
  const dir = path.join(root, 'secrets/prod/db');
  assert.equal(await readFile(path.join(dir, 'password'), 'utf8'), 'hunter2');
  assert.equal(await mode(path.join(dir, 'password')), 0o400);
  for (const d of ['secrets', 'secrets/prod', 'secrets/prod/db', 'secrets/prod/db/..data']) assert.equal(await mode(path.join(root, d)), 0o700, d);
  assert.deepEqual(await s.list(), ['secrets/prod/db']);

  const elsewhere = path.join(parent, 'run/secrets');
  const s2 = sink({ secretsRoot: elsewhere, secretFileMode: 0o440, secretDirMode: 0o750 });
  await s2.apply(desired('secrets', 'prod', 'db', { password: 'x' }));
  await s2.apply(desired('configmaps', 'prod', 'db', { password: 'not secret' }));
  assert.equal(await mode(path.join(elsewhere, 'prod/db/password')), 0o440);
  assert.equal(await mode(path.join(elsewhere, 'prod/db')), 0o750);
  assert.deepEqual(await s2.list(), ['configmaps/prod/db', 'secrets/prod/db']);
  assert.throws(() => sink({ secretsRoot: path.join(root, 'configmaps/x') }), /overlaps/);
  assert.throws(() => sink({ secretsRoot: root }), /overlaps/);
});

test('unchanged payload: nothing written, ..data target and inodes kept', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const obj = desired('configmaps', 'default', 'app', { a: '1', b: '2', c: '3' });
  assert.equal(await s.apply(obj), 'written');
  const dir = path.join(root, 'configmaps/default/app');
  const target = await readlink(path.join(dir, '..data'));
  const ino = (await stat(path.join(dir, '..data/a'))).ino;
  const listing = await walk(dir);
  assert.equal(await s.apply(obj), 'unchanged');
  assert.equal(await s.apply(desired('configmaps', 'default', 'app', { c: '3', b: '2', a: '1' })), 'unchanged');
  assert.equal(await readlink(path.join(dir, '..data')), target);
  assert.equal((await stat(path.join(dir, '..data/a'))).ino, ino);
  assert.deepEqual(await walk(dir), listing);
  assert.equal(await s.apply(desired('configmaps', 'default', 'app', { a: '1', b: '2', c: '4' })), 'written');
  assert.notEqual(await readlink(path.join(dir, '..data')), target);
});

test('restart: the content hash in the payload dir name answers the first check without reading files', async (t) => {
  const { root, sink } = await scratch(t);
  const objs = Array.from({ length: 20 }, (_, i) => desired(i % 2 ? 'secrets' : 'configmaps', 'default', `app-${i}`, { a: `alpha-${i}`, b: `beta-${i}` }));
  const first = sink();
  for (const o of objs) assert.equal(await first.apply(o), 'written');
  const dir0 = path.join(root, 'configmaps/default/app-0');
  const target = await readlink(path.join(dir0, '..data'));

  // A same-size in-place edit: only a byte compare can see it.
  await writeFile(path.join(dir0, '..data/a'), 'ALPHA-0');
  const restarted = sink();
  for (const o of objs) assert.equal(await restarted.apply(o), 'unchanged', o.id);
  assert.equal(await readlink(path.join(dir0, '..data')), target);
  assert.equal(await restarted.plan(objs[0]!), 'update', 'plan compares bytes');
  // Its next apply of the same id (a resync, a drift hint) compares bytes and restores.
  assert.equal(await restarted.apply(objs[0]!), 'written');
  assert.equal(await readFile(path.join(dir0, 'a'), 'utf8'), 'alpha-0');
  assert.equal(await restarted.apply(objs[1]!), 'unchanged');

  // The hash covers modes: a new mode config rewrites at once.
  assert.equal(await sink({ configFileMode: 0o640 }).apply(objs[0]!), 'written');
  assert.equal(await mode(path.join(dir0, 'a')), 0o640);

  // A payload dir written by an older version (no hash in its name) is compared byte for byte.
  const dir2 = path.join(root, 'configmaps/default/app-2');
  const old = '..2020_01_01_00_00_00_000.AbCdEf';
  await rename(path.join(dir2, await readlink(path.join(dir2, '..data'))), path.join(dir2, old));
  await unlink(path.join(dir2, '..data'));
  await symlink(old, path.join(dir2, '..data'));
  assert.equal(await sink().apply(objs[2]!), 'unchanged');
  await writeFile(path.join(dir2, '..data/b'), 'BETA-2');
  assert.equal(await sink().apply(objs[2]!), 'written');
  assert.equal(await readFile(path.join(dir2, 'b'), 'utf8'), 'beta-2');
});

test('restart with stamps: one lstat answers each unchanged dir (no readdir of it); dirs changed while down are repaired; the file is used once', async (t) => {
  const { parent, root, sink } = await scratch(t);
  const stampsFile = path.join(parent, 'state', 'files-stamps.json');
  const objs = Array.from({ length: 20 }, (_, i) => desired(i % 2 ? 'secrets' : 'configmaps', 'default', `app-${i}`, { a: `alpha-${i}`, b: `beta-${i}` }));
  const first = sink({ stampsFile });
  for (const o of objs) assert.equal(await first.apply(o), 'written');
  await first.close();
  assert.equal((await stat(stampsFile)).mode & 0o777, 0o600);

  // While "down": a key link replaced by a file (the dir's mtime moves), a dir chmod-ed (its ctime and mode).
  const dir0 = path.join(root, 'configmaps/default/app-0');
  await unlink(path.join(dir0, 'a'));
  await writeFile(path.join(dir0, 'a'), 'planted');
  const dir2 = path.join(root, 'configmaps/default/app-2');
  await chmod(dir2, 0o777);

  // Every readdir the restarted sink makes (the writer's named import, kept in step by syncBuiltinESMExports).
  const read: string[] = [];
  const real = fs.readdirSync;
  (fs as { readdirSync: unknown }).readdirSync = ((p: string, o?: unknown) => (read.push(String(p)), real(p as never, o as never))) as typeof fs.readdirSync;
  syncBuiltinESMExports();
  t.after(() => {
    (fs as { readdirSync: unknown }).readdirSync = real;
    syncBuiltinESMExports();
  });
  const restarted = sink({ stampsFile });
  for (const o of objs) assert.equal(await restarted.apply(o), o.name === 'app-0' || o.name === 'app-2' ? 'written' : 'unchanged', o.id);
  assert.equal(await readFile(path.join(dir0, 'a'), 'utf8'), 'alpha-0');
  assert.equal(await mode(dir2), 0o755);
  const untouched = objs.filter((o) => o.name !== 'app-0' && o.name !== 'app-2').map((o) => path.join(o.kind === 'secrets' ? path.join(root, 'secrets') : path.join(root, 'configmaps'), o.namespace, o.name));
  assert.deepEqual(read.filter((p) => untouched.includes(p)), [], 'an unchanged dir with a matching stamp is not read');
  await assert.rejects(stat(stampsFile), /ENOENT/, 'a stamp is good for one start');

  // Without stamps (the file was used): every dir is read again, which is what the spy above would have seen.
  read.length = 0;
  const third = sink({ stampsFile });
  for (const o of objs) assert.equal(await third.apply(o), 'unchanged', o.id);
  assert.ok(untouched.every((d) => read.includes(d)), 'without stamps each dir is read');

  // A malformed stamps file is ignored: every dir checked in full, nothing rewritten.
  await third.close();
  await writeFile(stampsFile, '{"v":1,"configmaps":[["x","y",[1],[2]]],"secrets":[]}');
  const fourth = sink({ stampsFile });
  for (const o of objs) assert.equal(await fourth.apply(o), 'unchanged', o.id);
});

test('key removed, object removed, list() only sees owned dirs', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  await s.apply(desired('configmaps', 'default', 'app', { a: '1', b: '2' }));
  await s.apply(desired('configmaps', 'default', 'app', { a: '1' }));
  const dir = path.join(root, 'configmaps/default/app');
  assert.deepEqual((await readdir(dir)).filter((n) => !n.startsWith('..')), ['a']);
  assert.equal((await readdir(dir)).length, 3); // a, ..data, one ts dir: the old one is gone

  const foreign = path.join(root, 'configmaps/default/foreign');
  await mkdir(foreign);
  await writeFile(path.join(foreign, 'keep.txt'), 'mine');
  await mkdir(path.join(root, 'secrets/default/notours'), { recursive: true });
  await s.apply(desired('secrets', 'default', 'app', { k: 'v' }));
  assert.deepEqual(await s.list(), ['configmaps/default/app', 'secrets/default/app']);

  await s.remove('configmaps/default/foreign');
  await s.remove('secrets/default/notours');
  await s.remove('configmaps/nothing/here');
  assert.equal(await readFile(path.join(foreign, 'keep.txt'), 'utf8'), 'mine');
  await assert.rejects(s.apply(desired('configmaps', 'default', 'foreign', { k: 'v' })), /not managed by confsync/);
  assert.equal(await readFile(path.join(foreign, 'keep.txt'), 'utf8'), 'mine');

  await s.remove('configmaps/default/app');
  await assert.rejects(lstat(dir), { code: 'ENOENT' });
  assert.ok((await readdir(path.join(root, 'configmaps/default'))).includes('foreign')); // ns dir kept: not empty
  await s.remove('secrets/default/app');
  assert.deepEqual(await readdir(path.join(root, 'secrets/default')), ['notours']);
  assert.deepEqual(await s.list(), []);
  await s.apply(desired('secrets', 'solo', 'x', { k: 'v' }));
  await s.remove('secrets/solo/x');
  await assert.rejects(lstat(path.join(root, 'secrets/solo')), { code: 'ENOENT' }); // empty ns dir removed
});

test('crash leftovers are cleaned up and an unowned leftover dir is adopted', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const obj = desired('configmaps', 'default', 'app', { a: '1' });
  await s.apply(obj);
  const dir = path.join(root, 'configmaps/default/app');
  await mkdir(path.join(dir, '..2001_01_01_00_00_00_000.AAAAAA'));
  await symlink('..2001_01_01_00_00_00_000.AAAAAA', path.join(dir, '..data_tmp'));
  await symlink('..data/gone', path.join(dir, 'gone'));
  assert.equal(await s.apply(obj), 'written');
  assert.deepEqual((await readdir(dir)).sort(), ['..data', await readlink(path.join(dir, '..data')), 'a'].sort());
  assert.equal(await s.apply(obj), 'unchanged');

  const half = path.join(root, 'configmaps/default/half'); // crash before the first swap
  await mkdir(path.join(half, '..2001_01_01_00_00_00_000.BBBBBB'), { recursive: true });
  assert.equal(await s.apply(desired('configmaps', 'default', 'half', { k: 'v' })), 'written');
  assert.equal(await readFile(path.join(half, 'k'), 'utf8'), 'v');
});

test('hand edits and deletions are restored by the next apply', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const obj = desired('secrets', 'default', 'app', { a: 'alpha', b: 'beta' });
  await s.apply(obj);
  const dir = path.join(root, 'secrets/default/app');
  await writeFile(path.join(dir, '..data/a'), 'tampered');
  assert.equal(await s.apply(obj), 'written');
  assert.equal(await readFile(path.join(dir, 'a'), 'utf8'), 'alpha');
  await unlink(path.join(dir, 'b'));
  assert.equal(await s.apply(obj), 'written');
  assert.equal(await readFile(path.join(dir, 'b'), 'utf8'), 'beta');
  await unlink(path.join(dir, 'b'));
  await writeFile(path.join(dir, 'b'), 'a regular file in place of the link');
  assert.equal(await s.apply(obj), 'written');
  assert.equal(await readlink(path.join(dir, 'b')), '..data/b');
  await chmod(path.join(dir, '..data/a'), 0o644);
  assert.equal(await s.apply(obj), 'written');
  assert.equal(await mode(path.join(dir, 'a')), 0o400);
  await unlink(path.join(dir, '..data'));
  assert.equal(await s.apply(obj), 'written');
  assert.equal(await readFile(path.join(dir, 'a'), 'utf8'), 'alpha');
  assert.equal(await s.apply(obj), 'unchanged');

  // A hand-made ..data pointing out of the object dir is replaced, never followed for writes.
  const outside = path.join(root, '..', 'outside');
  await mkdir(outside);
  await writeFile(path.join(outside, 'a'), 'alpha');
  await writeFile(path.join(outside, 'b'), 'beta');
  const targets = [outside, '..', '../../../outside'];
  for (const target of targets) {
    await unlink(path.join(dir, '..data'));
    await symlink(target, path.join(dir, '..data'));
    assert.equal(await s.apply(obj), 'written', target);
    assert.match(await readlink(path.join(dir, '..data')), /^\.\.\d{4}_/);
  }
  assert.deepEqual((await readdir(outside)).sort(), ['a', 'b']);
  assert.equal(await readFile(path.join(outside, 'a'), 'utf8'), 'alpha');
});

test('a same-size in-place edit is found after checks that only lstat (the verified-stat digest)', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const obj = desired('configmaps', 'default', 'app', { a: 'alpha', b: 'beta' });
  assert.equal(await s.apply(obj), 'written');
  const file = path.join(root, 'configmaps/default/app/..data/a');
  // The first deep check reads the bytes and records the files' lstat; the next ones only compare lstat.
  assert.equal(await s.apply(obj), 'unchanged');
  assert.equal(await s.apply(obj), 'unchanged');
  await sleep(5); // past the kernel's coarse timestamp tick
  await writeFile(file, 'ALPHA'); // same size, same inode: only mtime/ctime tell
  assert.equal(await s.apply(obj), 'written', 'a same-size edit went unnoticed');
  assert.equal(await readFile(path.join(root, 'configmaps/default/app/a'), 'utf8'), 'alpha');
  // Rewriting identical bytes moves ctime: read again, found equal, nothing written.
  await sleep(5);
  const now = path.join(root, 'configmaps/default/app', await readlink(path.join(root, 'configmaps/default/app/..data')), 'b');
  await writeFile(now, 'beta');
  assert.equal(await s.apply(obj), 'unchanged');
});

test('loose modes on existing roots are fixed with a warning; a kind root that is a link at start is used', async (t) => {
  const { root, parent } = await scratch(t);
  let logged = '';
  const sink = new FileSink({ root, logger: createLogger('warn', { write: (l: string) => ((logged += l), true) } as unknown as NodeJS.WritableStream) });
  await mkdir(path.join(root, 'secrets/prod'), { recursive: true });
  await mkdir(path.join(root, 'configmaps/wide'), { recursive: true });
  for (const d of ['secrets', 'secrets/prod', 'configmaps/wide']) await chmod(path.join(root, d), 0o777);
  await sink.apply(desired('secrets', 'prod', 'db', { k: 'v' }));
  await sink.apply(desired('configmaps', 'wide', 'app', { k: 'v' }));
  for (const d of ['secrets', 'secrets/prod']) assert.equal(await mode(path.join(root, d)), 0o700, d);
  assert.equal(await mode(path.join(root, 'configmaps/wide')), 0o755);
  assert.equal(logged.match(/group\/world-writable; mode fixed/g)?.length, 3, logged);

  // An operator's link at the kind root itself (e.g. to tmpfs) is resolved once, at start.
  const real = path.join(parent, 'tmpfs-secrets');
  await mkdir(real);
  const linked = new FileSink({ root: path.join(parent, 'root2'), logger });
  await mkdir(path.join(parent, 'root2'));
  await symlink(real, path.join(parent, 'root2/secrets'));
  await linked.apply(desired('secrets', 'prod', 'db', { k: 'v' }));
  assert.equal(await readFile(path.join(real, 'prod/db/k'), 'utf8'), 'v');
  assert.deepEqual(await linked.list(), ['secrets/prod/db']);
});

test('watchDrift reports a deleted object or namespace dir within 2 s; nothing inside object dirs is watched', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  t.after(() => s.close());
  const seen: string[] = [];
  await s.watchDrift((id) => seen.push(id));
  const obj = desired('configmaps', 'default', 'app', { a: '1', b: '2' });
  await s.apply(obj);
  await s.apply(desired('secrets', 'default', 'app', { k: 'v' }));
  await sleep(400);
  const ownEvents = seen.length;
  seen.length = 0;

  const waitFor = async (id: string, ms = 2000) => {
    const start = Date.now();
    while (!seen.includes(id) && Date.now() - start < ms) await sleep(20);
    return Date.now() - start;
  };
  const times: string[] = [];
  const expectReported = async (what: string, id: string, act: () => Promise<unknown>) => {
    seen.length = 0;
    await act();
    times.push(`${what} ${await waitFor(id)} ms`);
    assert.ok(seen.includes(id), `${what} not reported`);
  };
  await expectReported('object dir deleted', 'configmaps/default/app', () => rm(path.join(root, 'configmaps/default/app'), { recursive: true }));
  assert.equal(await s.apply(obj), 'written');
  await sleep(400);
  await expectReported('namespace dir deleted', 'secrets/default/app', () => rm(path.join(root, 'secrets/default'), { recursive: true }));
  await s.apply(desired('secrets', 'default', 'app', { k: 'v' }));
  await sleep(400);
  // A namespace dir moved away and replaced by a new one (another inode): its objects are
  // reported, and the new dir is watched in turn (its first watch saw its old inode only).
  await expectReported('namespace dir replaced', 'configmaps/default/app', async () => {
    await rename(path.join(root, 'configmaps/default'), path.join(root, 'configmaps-old'));
    await mkdir(path.join(root, 'configmaps/default'));
  });
  await rm(path.join(root, 'configmaps-old'), { recursive: true });
  assert.equal(await s.apply(obj), 'written');
  await sleep(400);
  await expectReported('object dir deleted in the new namespace dir', 'configmaps/default/app', () => rm(path.join(root, 'configmaps/default/app'), { recursive: true }));
  assert.equal(await s.apply(obj), 'written');
  await sleep(400);

  // The trade (files-drift.ts): what happens inside an object dir (a key link, `..data`,
  // a payload file) is left to the periodic resync, so our own writes wake no watcher.
  for (const [what, act] of [
    ['key link deleted', () => unlink(path.join(root, 'secrets/default/app/k'))],
    ['..data deleted', () => unlink(path.join(root, 'configmaps/default/app/..data'))],
  ] as const) {
    seen.length = 0;
    await act();
    await waitFor('x', 600);
    assert.deepEqual(seen, [], `${what}: object dirs are watched again`);
  }
  assert.equal(await s.apply(obj), 'written');
  await sleep(400);
  // The trade (files-drift.ts): an in-place edit inside a payload dir is left to the periodic resync.
  seen.length = 0;
  await writeFile(path.join(root, 'configmaps/default/app/..data/a'), 'hand edit');
  await waitFor('configmaps/default/app', 600);
  assert.deepEqual(seen, [], 'payload dirs are watched again');
  t.diagnostic(`drift reported after: ${times.join(', ')}; own-write reports leaked: ${ownEvents}`);
  assert.equal(isIgnored('/r/configmaps/ns/name/..2024_01_01_00_00_00_000.AbCdEf'), true);
  assert.equal(isIgnored('/r/configmaps/ns/name/..data_tmp'), true);
  assert.equal(isIgnored('/r/configmaps/ns/name/..data'), false);
  assert.equal(isIgnored('/r/configmaps/ns/name/a..b'), false);
});

test('uid/gid: object dir, ts dir and files are chowned', async (t) => {
  const { root, sink } = await scratch(t);
  if (process.getuid?.() !== 0) return t.skip('needs root');
  const s = sink({ uid: 1000, gid: 1000 });
  const obj = desired('secrets', 'default', 'app', { a: '1' });
  await s.apply(obj);
  const dir = path.join(root, 'secrets/default/app');
  for (const p of [dir, path.join(dir, '..data'), path.join(dir, '..data/a'), path.join(root, 'secrets/default')]) {
    const st = await stat(p);
    assert.deepEqual([st.uid, st.gid], [1000, 1000], p);
  }
  assert.equal(await s.apply(obj), 'unchanged');
  assert.equal(await sink({ uid: 1001, gid: 1001 }).apply(obj), 'written');
  assert.equal((await stat(path.join(dir, 'a'))).uid, 1001);
});

test('concurrent applies of one id are serialized', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const versions = Array.from({ length: 30 }, (_, v) => desired('configmaps', 'default', 'app', Object.fromEntries(Array.from({ length: 1 + (v % 4) }, (_, i) => [`k${i}`, `v${v}`]))));
  const results = await Promise.all(versions.map((o) => s.apply(o)));
  assert.ok(results.every((r) => r === 'written'));
  const dir = path.join(root, 'configmaps/default/app');
  const last = versions.at(-1)!;
  assert.deepEqual((await readdir(dir)).filter((n) => !n.startsWith('..')).sort(), [...last.data.keys()].sort());
  for (const [k, v] of last.data) assert.deepEqual(await readFile(path.join(dir, k)), v);
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('..')).length, 2);
  await s.close();
});

/** Runs the reader worker over `dir` while `writer` runs; returns its verdict. */
async function withReader(dir: string, keys: string[], writer: (torn: () => number) => Promise<void>) {
  const shared = new SharedArrayBuffer(16);
  const counters = new Int32Array(shared);
  const worker = new Worker(new URL('./helpers/reader-worker.js', import.meta.url), { workerData: { dir, keys, shared } });
  const done = new Promise<{ samples: string[] }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  try {
    await writer(() => Atomics.load(counters, 3));
  } finally {
    Atomics.store(counters, 0, 1);
  }
  const { samples } = await done;
  await worker.terminate();
  return { passes: Atomics.load(counters, 1), straddled: Atomics.load(counters, 2), torn: Atomics.load(counters, 3), samples };
}

const KEYS = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
const versioned = (v: number) => desired('configmaps', 'default', 'busy', Object.fromEntries(KEYS.map((k) => [k, versionedValue(v, k)])));

test('atomicity: a concurrent reader never sees mixed versions or partial files over 1000 applies', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const dir = path.join(root, 'configmaps/default/busy');
  await s.apply(versioned(0));
  const times: number[] = [];
  const verdict = await withReader(dir, KEYS, async () => {
    for (let v = 1; v <= 1000; v++) {
      const start = performance.now();
      assert.equal(await s.apply(versioned(v)), 'written');
      times.push(performance.now() - start);
    }
  });
  times.sort((a, b) => a - b);
  const pct = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!.toFixed(2);
  t.diagnostic(`1000 projections of ${KEYS.length} keys (4-64 KiB each): p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms`);
  t.diagnostic(`reader: ${verdict.passes} passes checked, ${verdict.straddled} straddled a swap (not judged), ${verdict.torn} torn`);
  assert.deepEqual(verdict.samples, []);
  assert.equal(verdict.torn, 0);
  assert.ok(verdict.passes > 0);
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('..')).length, 2);
});

test('atomicity on tmpfs (no fsync there): a concurrent reader never sees mixed versions over 300 applies', async (t) => {
  if (statfsSync('/dev/shm').type !== 0x01021994) return t.skip('/dev/shm is not tmpfs here');
  const parent = await mkdtemp('/dev/shm/confsync-files-');
  t.after(() => rm(parent, { recursive: true, force: true }));
  const s = new FileSink({ root: path.join(parent, 'root'), logger });
  const dir = path.join(parent, 'root', 'configmaps/default/busy');
  await s.apply(versioned(0));
  const verdict = await withReader(dir, KEYS, async () => {
    for (let v = 1; v <= 300; v++) assert.equal(await s.apply(versioned(v)), 'written');
  });
  t.diagnostic(`reader: ${verdict.passes} passes checked, ${verdict.torn} torn`);
  assert.equal(verdict.torn, 0);
  assert.ok(verdict.passes > 0);
  assert.equal(await readFile(path.join(dir, KEYS[0]!), 'utf8').then((v) => v.startsWith('v300')), true);
});

test('atomicity check is real: the same reader catches an in-place (non-atomic) writer', async (t) => {
  const { root, sink } = await scratch(t);
  const s = sink();
  const dir = path.join(root, 'configmaps/default/busy');
  await s.apply(versioned(0));
  const verdict = await withReader(dir, KEYS, async (torn) => {
    const deadline = Date.now() + 5000;
    for (let v = 1; torn() === 0 && Date.now() < deadline; v++) {
      for (const key of KEYS) await writeFile(path.join(dir, '..data', key), versionedValue(v, key));
    }
  });
  t.diagnostic(`in-place writer: ${verdict.torn} torn passes detected, e.g. ${verdict.samples[0]}`);
  assert.ok(verdict.torn > 0, 'the reader failed to detect a non-atomic writer');
});

test('warnIfPersistent: longest mount prefix decides', async () => {
  const mounts = parseMounts(
    ['/dev/vda / ext4 rw 0 0', 'tmpfs /run tmpfs rw 0 0', '/dev/vdb /run/disk ext4 rw 0 0', 'tmpfs /mnt/with\\040space tmpfs rw 0 0'].join('\n'),
  );
  assert.equal(fsTypeAt(mounts, '/run/confsync/secrets'), 'tmpfs');
  assert.equal(fsTypeAt(mounts, '/run/disk/secrets'), 'ext4');
  assert.equal(fsTypeAt(mounts, '/runner/secrets'), 'ext4');
  assert.equal(fsTypeAt(mounts, '/mnt/with space/x'), 'tmpfs');
  const real = parseMounts(await readFile('/proc/mounts', 'utf8').catch(() => ''));
  if (fsTypeAt(real, '/dev/shm') === 'tmpfs') assert.equal(await warnIfPersistent('/dev/shm/confsync/not/yet/there'), false);
  if (!['tmpfs', 'ramfs'].includes(fsTypeAt(real, os.tmpdir()) ?? '')) assert.equal(await warnIfPersistent(os.tmpdir()), true);
});

test('bulk (first sync): the writes in flight share file-system syncs, and every file is right', async (t) => {
  const { root, sink } = await scratch(t);
  const cp = await import('node:child_process');
  const real = cp.default.spawn;
  const syncs: string[] = [];
  // Every dir the sink hands its sync shell (sync-batch.ts's named import, kept in step by syncBuiltinESMExports).
  (cp.default as { spawn: unknown }).spawn = ((...args: unknown[]) => {
    const child = (real as (...a: unknown[]) => import('node:child_process').ChildProcessWithoutNullStreams)(...args);
    if (args[0] === 'sh') {
      const write = child.stdin.write.bind(child.stdin) as (chunk: string) => boolean;
      (child.stdin as { write: unknown }).write = (chunk: string) => (syncs.push(chunk.trimEnd()), write(chunk));
    }
    return child;
  }) as typeof real;
  syncBuiltinESMExports();
  t.after(() => {
    (cp.default as { spawn: unknown }).spawn = real;
    syncBuiltinESMExports();
  });
  const s = sink();
  const objs = Array.from({ length: 40 }, (_, i) => desired('configmaps', `ns${i % 3}`, `app${i}`, { a: `a${i}`, b: `b${i}` }));
  assert.deepEqual(await Promise.all(objs.map((o) => s.apply(o, { bulk: true }))), objs.map(() => 'written'));
  for (const [i, o] of objs.entries()) {
    assert.equal(await readFile(path.join(root, 'configmaps', o.namespace, o.name, 'a'), 'utf8'), `a${i}`);
    assert.equal(await readFile(path.join(root, 'configmaps', o.namespace, o.name, 'b'), 'utf8'), `b${i}`);
  }
  // Per object: one sync before its swap, one after; shared, 80 waits take a handful of syncs.
  assert.ok(syncs.length >= 2 && syncs.length <= 8, `${syncs.length} syncs for 40 objects`);
  assert.ok(syncs.every((d) => d === path.join(root, 'configmaps')), `each syncs the kind root’s file system: ${syncs.join(', ')}`);
  // A single change (not bulk) fsyncs its own files: no process.
  syncs.length = 0;
  assert.equal(await s.apply(desired('configmaps', 'ns0', 'app0', { a: 'new' })), 'written');
  assert.equal(syncs.length, 0);
});

test('bulk without a sync command: that write fails once with a warning, then every file is fsynced as before', async (t) => {
  const { root, sink } = await scratch(t);
  const lines: string[] = [];
  const s = sink({ logger: createLogger('warn', { write: (l: string) => (lines.push(l), true) } as unknown as NodeJS.WritableStream) });
  const path0 = process.env.PATH;
  process.env.PATH = path.join(root, 'no-such-bin');
  t.after(() => void (process.env.PATH = path0));
  await assert.rejects(s.apply(desired('configmaps', 'default', 'app', { a: '1' }), { bulk: true }), /sync of the file system of .* failed/);
  assert.equal((await readdir(path.join(root, 'configmaps/default'))).length, 0, 'the failed write left nothing behind');
  assert.equal(await s.apply(desired('configmaps', 'default', 'app', { a: '1' }), { bulk: true }), 'written');
  assert.equal(await readFile(path.join(root, 'configmaps/default/app/a'), 'utf8'), '1');
  const warned = lines.filter((l) => l.includes('no file-system-wide sync'));
  assert.equal(warned.length, 1, lines.join(''));
});
