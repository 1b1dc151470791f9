import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from './harness/etcd.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';

const P = '/confsync';

test('daemon: put → files swapped → the matching hook runs with the object id; a non-matching object runs nothing', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-d-'));
  const out = path.join(dir, 'hook-out');
  const hooks = [{ objects: ['configmaps/default/app'], command: ['/bin/sh', '-c', `echo "$CONFSYNC_OBJECTS" >> '${out}'`], debounceMs: 50 }];
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, hooks }, dir).start();
  try {
    await d.ready();
    // The non-matching object first: once its file is there, a wrong run for it would
    // show up before (or together with) the matching one.
    await etcdc.put(`${P}/global/configmaps/default/other/k`).value('v');
    await until(() => readOr(d.file('configmaps', 'default', 'other', 'k')) === 'v', 'non-matching object written');
    await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v');
    await until(() => readOr(d.file('configmaps', 'default', 'app', 'k')) === 'v', 'matching object written');
    await until(() => readOr(out), 'hook output (fails until src/daemon.ts adds Hooks to the reconciler observers)', 5000);
    await sleep(300); // past the window: any further run would have happened
    assert.equal(readOr(out), 'configmaps/default/app\n');
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
  }
});
