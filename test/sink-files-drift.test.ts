/**
 * Hand changes to projected files, through the real daemon. The drift watch
 * sees a deleted key link, `..data` or object dir at once; an in-place edit of
 * a file inside a payload dir is not watched (files-drift.ts says why) and is
 * restored by the periodic resync instead.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEtcd } from './harness/etcd.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';

const P = '/confsync';

test('hand deletions are restored at once (no resync), in-place payload edits at the next resync', async (t) => {
  const etcd = await startEtcd();
  const slow = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 3600 });
  const fast = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 1 });
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/app/a`, 'alpha');
    etcd.ctl('put', `${P}/global/configmaps/default/app/b`, 'beta');
    slow.start();
    await slow.ready();
    const a = slow.file('configmaps', 'default', 'app', 'a');
    const dir = slow.file('configmaps', 'default', 'app');
    await until(() => readOr(a) === 'alpha', 'projected');
    await sleep(300);

    const took: string[] = [];
    const restored = async (what: string, act: () => void) => {
      const start = Date.now();
      act();
      await until(() => readOr(a) === 'alpha' && readOr(path.join(dir, 'b')) === 'beta', `${what} restored`, 3000);
      took.push(`${what} ${Date.now() - start} ms`);
      await sleep(300);
    };
    await restored('key link deleted', () => fs.unlinkSync(a));
    await restored('..data deleted', () => fs.unlinkSync(path.join(dir, '..data')));
    await restored('object dir deleted', () => fs.rmSync(dir, { recursive: true }));

    fs.writeFileSync(path.join(dir, '..data', 'a'), 'hand edit');
    await sleep(1500);
    assert.equal(readOr(a), 'hand edit', 'an in-place payload edit was restored without a resync: is the payload dir watched again?');
    assert.equal(await slow.signal('SIGTERM'), 0);

    // A restart over files that match rewrites nothing (the content hash in the payload dir name).
    fs.writeFileSync(path.join(dir, '..data', 'a'), 'alpha');
    etcd.ctl('put', `${P}/global/configmaps/default/other/k`, 'v');
    const logFrom = slow.log.length;
    slow.start();
    await slow.ready();
    await until(() => readOr(slow.file('configmaps', 'default', 'other', 'k')) === 'v', 'the new object written after the restart');
    await sleep(500);
    const writes = slow.log.slice(logFrom).split('\n').filter((l) => l.includes('"msg":"object written"'));
    assert.deepEqual(writes.map((l) => JSON.parse(l).object), ['configmaps/default/other'], 'the restart rewrote an object whose files matched');
    assert.equal(await slow.signal('SIGTERM'), 0);

    fast.start();
    await fast.ready();
    const fa = fast.file('configmaps', 'default', 'app', 'a');
    await until(() => readOr(fa) === 'alpha', 'projected by the second daemon');
    await sleep(300);
    const start = Date.now();
    fs.writeFileSync(path.join(fast.file('configmaps', 'default', 'app'), '..data', 'a'), 'hand edit');
    await until(() => readOr(fa) === 'alpha', 'in-place edit restored by the resync', 5000);
    took.push(`in-place edit (resyncSeconds 1) ${Date.now() - start} ms`);
    t.diagnostic(took.join('; '));
    assert.equal(await fast.signal('SIGTERM'), 0);
  } finally {
    await slow.cleanup();
    await fast.cleanup();
    await etcd.stop();
  }
});
