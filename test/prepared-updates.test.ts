/**
 * Updates prepared ahead (reconciler (9), FileSink.prepare, AtomicWriter.prepare):
 * while the source holds a change for ordering, the file sink writes and fsyncs
 * the new payload dir and swaps nothing; the apply that follows only swaps it in,
 * and a preparation it does not want is thrown away. Real files in a temp dir;
 * the daemon-level check against etcd is in ops.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DesiredObject } from '../src/desired/types.js';
import { objectId } from '../src/keyspace.js';
import { createLogger } from '../src/log.js';
import { Reconciler } from '../src/reconcile/reconciler.js';
import { FileSink } from '../src/sink/files.js';
import type { Change } from '../src/source/types.js';

const logger = createLogger('silent');

function cm(name: string, data: Record<string, string>, hash: string): DesiredObject {
  return {
    id: objectId('configmaps', 'default', name),
    kind: 'configmaps',
    namespace: 'default',
    name,
    data: new Map(Object.entries(data).map(([k, v]) => [k, Buffer.from(v)])),
    labels: {},
    annotations: {},
    revision: 1,
    hash,
  };
}

async function scratch(t: { after: (fn: () => Promise<void>) => void }) {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'confsync-prepared-'));
  t.after(() => rm(parent, { recursive: true, force: true }));
  const root = path.join(parent, 'root');
  const sink = new FileSink({ root, logger });
  t.after(() => sink.close());
  return { parent, root, sink, dir: path.join(root, 'configmaps/default/app') };
}

/** The `..`-entries of an object dir other than `..data`: payload dirs, live or not. */
async function payloadDirs(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('..') && n !== '..data').sort();
}

/** `app` applied at k=v1, then k=v2 prepared: the live payload dir and the prepared one. */
async function appliedThenPrepared(sink: FileSink, dir: string): Promise<{ live: string; prepared: string }> {
  await sink.apply(cm('app', { k: 'v1' }, 'h1'));
  const live = await readlink(path.join(dir, '..data'));
  await sink.prepare(cm('app', { k: 'v2' }, 'h2'));
  const dirs = await payloadDirs(dir);
  assert.equal(dirs.length, 2, 'the live payload dir and the prepared one');
  return { live, prepared: dirs.find((d) => d !== live)! };
}

async function until<T>(f: () => Promise<T | undefined | false>, what: string, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('prepared, then applied: the apply swaps in the payload dir written ahead; readers saw the old value until then', async (t) => {
  const { sink, dir } = await scratch(t);
  assert.equal(await sink.apply(cm('app', { k: 'v1', other: 'o' }, 'h1')), 'written');
  const live = await readlink(path.join(dir, '..data'));

  await sink.prepare(cm('app', { k: 'v2', other: 'o' }, 'h2'));
  const dirs = await payloadDirs(dir);
  assert.equal(dirs.length, 2, 'the live payload dir and the prepared one');
  const prepared = dirs.find((d) => d !== live)!;
  assert.equal(await readFile(path.join(dir, prepared, 'k'), 'utf8'), 'v2', 'written ahead');
  assert.equal(await readlink(path.join(dir, '..data')), live, 'nothing swapped');
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v1', 'readers still see the old value');

  assert.equal(await sink.apply(cm('app', { k: 'v2', other: 'o' }, 'h2')), 'written');
  assert.equal(await readlink(path.join(dir, '..data')), prepared, 'the prepared dir is what went live');
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v2');
  assert.deepEqual(await payloadDirs(dir), [prepared], 'the old payload dir is gone');
  assert.deepEqual(sink.preparedCounts(), { swapped: 1, discarded: 0 });
});

test('prepared, then another state applied: the preparation is thrown away and the applied state is what shows', async (t) => {
  const { sink, dir } = await scratch(t);
  await sink.apply(cm('app', { k: 'v1' }, 'h1'));
  await sink.prepare(cm('app', { k: 'v2' }, 'h2'));
  assert.equal(await sink.apply(cm('app', { k: 'v3', added: 'a' }, 'h3')), 'written');
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v3');
  assert.equal(await readFile(path.join(dir, 'added'), 'utf8'), 'a');
  assert.deepEqual(await payloadDirs(dir), [await readlink(path.join(dir, '..data'))], 'only the live payload dir is left');
  assert.deepEqual(sink.preparedCounts(), { swapped: 0, discarded: 1 });
});

test('prepared, then discarded (no apply came): removed; the live state is untouched', async (t) => {
  const { sink, dir } = await scratch(t);
  const { live } = await appliedThenPrepared(sink, dir);
  sink.discard(objectId('configmaps', 'default', 'app'));
  await until(async () => (await payloadDirs(dir)).length === 1, 'prepared dir removed');
  assert.deepEqual(await payloadDirs(dir), [live]);
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v1');
  assert.deepEqual(sink.preparedCounts(), { swapped: 0, discarded: 1 });
});

test('a prepared dir touched after it was complete is not swapped in: the apply writes a fresh one', async (t) => {
  const { sink, dir } = await scratch(t);
  const { prepared } = await appliedThenPrepared(sink, dir);
  await writeFile(path.join(dir, prepared, 'planted'), 'x'); // someone with write access to the files root
  assert.equal(await sink.apply(cm('app', { k: 'v2' }, 'h2')), 'written');
  const now = await readlink(path.join(dir, '..data'));
  assert.notEqual(now, prepared);
  assert.deepEqual(await readdir(path.join(dir, now)), ['k'], 'no planted file in what went live');
  assert.deepEqual(await payloadDirs(dir), [now], 'the touched dir is removed with the other stale entries');
  assert.deepEqual(sink.preparedCounts(), { swapped: 0, discarded: 1 });
});

test('a link put in place of a prepared dir is removed, never followed', async (t) => {
  const { parent, sink, dir } = await scratch(t);
  const { prepared } = await appliedThenPrepared(sink, dir);
  const outside = path.join(parent, 'outside');
  await mkdir(outside);
  await writeFile(path.join(outside, 'precious'), 'keep me');
  await rename(path.join(dir, prepared), path.join(parent, 'moved-away'));
  await symlink(outside, path.join(dir, prepared));
  sink.discard(objectId('configmaps', 'default', 'app'));
  await until(async () => (await payloadDirs(dir)).length === 1, 'link removed');
  assert.equal(await readFile(path.join(outside, 'precious'), 'utf8'), 'keep me', 'nothing removed through the link');
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v1');
});

test('nothing is prepared for an object not applied yet, nor for the state already live', async (t) => {
  const { root, sink, dir } = await scratch(t);
  await sink.prepare(cm('app', { k: 'v1' }, 'h1'));
  await assert.rejects(lstat(path.join(root, 'configmaps')), { code: 'ENOENT' }, 'a create is not prepared: no dir appears early');
  await sink.apply(cm('app', { k: 'v1' }, 'h1'));
  await sink.prepare(cm('app', { k: 'v1' }, 'h1'));
  assert.equal((await payloadDirs(dir)).length, 1);
  assert.deepEqual(sink.preparedCounts(), { swapped: 0, discarded: 0 });
});

test('reconciler: held changes prepare the update; the changes event that follows applies what etcd says, guessed right or wrong', async (t) => {
  const { sink, dir } = await scratch(t);
  const r = new Reconciler({ prefix: '/confsync/', cluster: 'c1', labels: {}, sinks: [sink], logger });
  t.after(() => r.close());
  const key = (scope: string, k: string) => `/confsync/${scope}/configmaps/default/app/${k}`;
  const put = (k: string, v: string, rev: number): Change => ({ type: 'put', kv: { key: k, value: Buffer.from(v), modRevision: rev } });
  const turn = () => new Promise((res) => setImmediate(res));
  r.handle({ type: 'snapshot', revision: 5, kvs: [{ key: key('global', 'k'), value: Buffer.from('v1'), modRevision: 5 }] });
  await r.whenIdle();
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v1');

  // Guessed right: the held change is the whole of the next release.
  const held = [put(key('global', 'k'), 'v2', 6)];
  r.handle({ type: 'held', changes: held });
  await turn(); // the speculation runs behind the source's question
  await until(async () => (await payloadDirs(dir)).length === 2, 'prepared');
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v1', 'held: nothing shows');
  r.handle({ type: 'changes', revision: 6, changes: held, head: 6 });
  await r.whenIdle();
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'v2');
  assert.deepEqual(sink.preparedCounts(), { swapped: 1, discarded: 0 });

  // Guessed wrong: the release also carries the other prefix's change at an earlier revision.
  r.handle({ type: 'held', changes: [put(key('global', 'k'), 'v3', 8)] });
  await turn();
  await until(async () => (await payloadDirs(dir)).length === 2, 'prepared');
  r.handle({ type: 'changes', revision: 8, changes: [put(key('clusters/c1', 'k'), 'mine', 7), put(key('global', 'k'), 'v3', 8)], head: 8 });
  await r.whenIdle();
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'mine', "the cluster's value wins: the guess (v3) never showed");
  assert.deepEqual(sink.preparedCounts(), { swapped: 1, discarded: 1 });
  assert.deepEqual(await payloadDirs(dir), [await readlink(path.join(dir, '..data'))]);

  // Held, then a release that applies nothing (an earlier bad @meta holds the object): the preparation is discarded.
  const unput: Change = { type: 'delete', key: key('clusters/c1', 'k'), modRevision: 10 };
  r.handle({ type: 'held', changes: [unput] });
  await turn();
  await until(async () => (await payloadDirs(dir)).length === 2, 'prepared');
  r.handle({ type: 'changes', revision: 10, changes: [put(key('clusters/c1', '@meta'), '{not json', 9), unput], head: 10 });
  await r.whenIdle();
  assert.equal(await readFile(path.join(dir, 'k'), 'utf8'), 'mine', 'held by the bad @meta: the last good state stays');
  await until(async () => (await payloadDirs(dir)).length === 1, 'discarded');
  assert.deepEqual(sink.preparedCounts(), { swapped: 1, discarded: 2 });
});
