/**
 * Hand changes to projected files, through the real daemon. The drift watch
 * sees a deleted object or namespace dir at once; what happens inside an object
 * dir (a key link, `..data`, a payload file) is not watched (files-drift.ts says
 * why) and is restored by the periodic resync instead.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEtcd } from './harness/etcd.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';

const P = '/confsync';

test('deleted object and namespace dirs are restored at once (no resync); links inside an object dir at the next resync, edits in place at the next deep one', async (t) => {
  const etcd = await startEtcd();
  const slow = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 3600 });
  const fast = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 1, verifySeconds: 3600 });
  const deep = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 1, verifySeconds: 2 });
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/app/a`, 'alpha');
    etcd.ctl('put', `${P}/global/configmaps/default/app/b`, 'beta');
    slow.start();
    await slow.ready();
    const a = slow.file('configmaps', 'default', 'app', 'a');
    const dir = slow.file('configmaps', 'default', 'app');
    await until(() => readOr(a) === 'alpha', 'projected');
    // The drift watch starts after the first full sync (daemon.ts); before it is up only the resync repairs.
    await until(() => slow.log.includes('"msg":"drift watch started"'), 'the drift watch');
    await sleep(300);

    const took: string[] = [];
    const restored = async (what: string, act: () => void) => {
      const start = Date.now();
      act();
      await until(() => readOr(a) === 'alpha' && readOr(path.join(dir, 'b')) === 'beta', `${what} restored`, 3000);
      took.push(`${what} ${Date.now() - start} ms`);
      await sleep(300);
    };
    await restored('object dir deleted', () => fs.rmSync(dir, { recursive: true }));
    await restored('namespace dir deleted', () => fs.rmSync(path.dirname(dir), { recursive: true }));

    fs.writeFileSync(path.join(dir, '..data', 'a'), 'hand edit');
    fs.unlinkSync(path.join(dir, 'b'));
    await sleep(1500);
    assert.equal(readOr(a), 'hand edit', 'an in-place payload edit was restored without a resync: is the payload dir watched again?');
    assert.equal(readOr(path.join(dir, 'b')), undefined, 'a deleted key link was restored without a resync: are object dirs watched again?');
    assert.equal(await slow.signal('SIGTERM'), 0);

    // A restart over files that match rewrites nothing (the content hash in the payload dir name).
    fs.writeFileSync(path.join(dir, '..data', 'a'), 'alpha');
    fs.symlinkSync('..data/b', path.join(dir, 'b'));
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
    // Between deep passes (verifySeconds) a pass lstats dirs only: an edit in place stays, a link change does not.
    // (Let a pass or two go by first.)
    await sleep(1500);
    fs.writeFileSync(path.join(fast.file('configmaps', 'default', 'app'), '..data', 'a'), 'hand edit');
    await sleep(2500);
    assert.equal(readOr(fa), 'hand edit', 'a pass between deep passes read the files (an edit in place is for verifySeconds)');
    fs.writeFileSync(path.join(fast.file('configmaps', 'default', 'app'), '..data', 'a'), 'alpha');
    await sleep(1500); // a pass that sees the file as it was verified: nothing to do
    for (const [what, act] of [
      ['key link deleted', () => fs.unlinkSync(fa)],
      ['..data deleted', () => fs.unlinkSync(path.join(fast.file('configmaps', 'default', 'app'), '..data'))],
    ] as const) {
      const start = Date.now();
      act();
      await until(() => readOr(fa) === 'alpha', `${what}: restored by the resync`, 5000);
      took.push(`${what} (resyncSeconds 1) ${Date.now() - start} ms`);
      await sleep(200);
    }
    assert.equal(await fast.signal('SIGTERM'), 0);

    deep.start();
    await deep.ready();
    const da = deep.file('configmaps', 'default', 'app', 'a');
    await until(() => readOr(da) === 'alpha', 'projected by the third daemon');
    await sleep(300);
    for (const [what, act] of [
      ['in-place edit', () => fs.writeFileSync(path.join(deep.file('configmaps', 'default', 'app'), '..data', 'a'), 'hand edit')],
      ['in-place edit of the same size', () => fs.writeFileSync(path.join(deep.file('configmaps', 'default', 'app'), '..data', 'a'), 'ALPHA')],
    ] as const) {
      const start = Date.now();
      act();
      await until(() => readOr(da) === 'alpha', `${what}: restored by a deep pass`, 6000);
      took.push(`${what} (verifySeconds 2) ${Date.now() - start} ms`);
      await sleep(200);
    }
    t.diagnostic(took.join('; '));
    assert.equal(await deep.signal('SIGTERM'), 0);
  } finally {
    await slow.cleanup();
    await fast.cleanup();
    await deep.cleanup();
    await etcd.stop();
  }
});
