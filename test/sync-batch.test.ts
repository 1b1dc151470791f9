/**
 * sink/sync-batch.ts: the group commit a first full sync's file writes share.
 * The batching rules with an injected sync (pure logic), then the real
 * `sync -f` on a real directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { SyncBatch } from '../src/sink/sync-batch.js';

/** A sync that runs until the test ends it; records each run. */
function manualSync() {
  const runs: { done: (err?: Error) => void }[] = [];
  const syncfs = () => new Promise<void>((resolve, reject) => runs.push({ done: (err) => (err ? reject(err) : resolve()) }));
  return { runs, syncfs };
}

const turn = () => new Promise((r) => setImmediate(r));

test('a call is served by a sync that started after it; calls made during one sync share the next', async () => {
  const { runs, syncfs } = manualSync();
  const batch = new SyncBatch('/x', syncfs);
  const settled: string[] = [];
  const a = batch.sync().then(() => settled.push('a'));
  await turn();
  assert.equal(runs.length, 1, 'the first call starts a sync after its turn');
  // Written while sync 1 runs: sync 1 may have passed these files already, so it cannot serve them.
  const b = batch.sync().then(() => settled.push('b'));
  const c = batch.sync().then(() => settled.push('c'));
  runs[0]!.done();
  await a;
  await turn();
  assert.deepEqual(settled, ['a'], 'b and c wait for a sync of their own');
  assert.equal(runs.length, 2, 'one more sync for both');
  runs[1]!.done();
  await Promise.all([b, c]);
  assert.deepEqual(settled.sort(), ['a', 'b', 'c']);
  assert.equal(runs.length, 2);
});

test('a failed sync rejects every call it was serving, naming the dir; the next batch is tried again', async () => {
  const { runs, syncfs } = manualSync();
  const batch = new SyncBatch('/data/configmaps', syncfs);
  const a = batch.sync();
  const b = batch.sync();
  await turn();
  runs[0]!.done(Object.assign(new Error('EIO'), { stderr: 'sync: error syncing /data/configmaps: Input/output error\n' }));
  for (const p of [a, b]) await assert.rejects(p, /sync of the file system of \/data\/configmaps failed: sync: error syncing .*Input\/output error$/);
  assert.equal(batch.unavailable, undefined, 'an I/O error is not a missing command');
  const c = batch.sync();
  await turn();
  runs[1]!.done();
  await c;
});

test('no sync command: the batch says so, and later calls fail at once', async () => {
  const batch = new SyncBatch('/x', () => Promise.reject(Object.assign(new Error('spawn sync ENOENT'), { code: 'ENOENT' })));
  await assert.rejects(batch.sync(), /failed: spawn sync ENOENT/);
  assert.match(batch.unavailable ?? '', /no sync command/);
  await assert.rejects(batch.sync(), /no sync command/);
});

test('the real sync -f: a dir on this file system syncs; a missing dir is an error naming it', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'confsync-syncfs-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await Promise.all(Array.from({ length: 5 }, () => new SyncBatch(dir).sync()));
  const missing = path.join(dir, 'gone');
  await assert.rejects(new SyncBatch(missing).sync(), (err: Error) => err.message.includes(missing) && !err.message.includes('\n'));
});

test('the real sync -f runs in one shell for the syncs that follow each other, and a new one after it went idle', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'confsync-syncfs-'));
  const cp = await import('node:child_process');
  const real = cp.default.spawn;
  const spawned: unknown[][] = [];
  (cp.default as { spawn: unknown }).spawn = (...args: unknown[]) => (spawned.push(args), (real as (...a: unknown[]) => unknown)(...args));
  syncBuiltinESMExports();
  t.after(async () => {
    (cp.default as { spawn: unknown }).spawn = real;
    syncBuiltinESMExports();
    await rm(dir, { recursive: true, force: true });
  });
  const batch = new SyncBatch(dir);
  for (let i = 0; i < 5; i++) await batch.sync();
  assert.equal(spawned.length, 1, 'five syncs, one shell');
  assert.equal(spawned[0]![0], 'sh');
  await new Promise((r) => setTimeout(r, 1500)); // the shell ends after 1 s without work
  await batch.sync();
  assert.equal(spawned.length, 2, 'a new shell after the idle one ended');
});

test('a dir whose path holds a newline (the shell reads one per line): unavailable, so the first sync falls back to fsync instead of failing for good', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'confsync-syncfs-\nline-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const batch = new SyncBatch(dir);
  await assert.rejects(batch.sync(), /holds a newline/);
  assert.match(batch.unavailable ?? '', /^cannot run 'sync -f' \(the path ".*\\nline-.*" holds a newline\): each file is fsynced instead$/);
});
