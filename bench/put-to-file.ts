/**
 * put → file latency, beside the raw etcd put → watch floor, in the same run.
 *
 *   npm run bench            (200 sequential puts)
 *   node dist/bench/put-to-file.js --puts 1000
 *
 * For each put: t0 just before the put is sent; "etcd watch" is when this
 * process's own raw watch sees the event (the floor any etcd consumer pays);
 * "put → file" is when the new value is readable at <root>/configmaps/…/<key>
 * in the daemon's projection (inotify on the object dir, plus a 2 ms poll).
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../test/harness/etcd.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { table } from './stats.js';

const args = process.argv.slice(2);
const puts = Number(args[args.indexOf('--puts') + 1] || 200) || 200;

const etcd = await startEtcd();
const client = new Etcd3({ hosts: etcd.endpoint });
const d = new DaemonProcess({ cluster: 'bench', etcd: { endpoints: [etcd.endpoint] } }).start();
try {
  await d.ready();
  const key = '/confsync/global/configmaps/default/bench/value';
  const file = d.file('configmaps', 'default', 'bench', 'value');
  await client.put(key).value('warmup');
  await until(() => readOr(file) === 'warmup', 'warm-up put');

  const watcher = await client.watch().key(key).create();
  let watchSeen: ((v: string) => void) | undefined;
  watcher.on('put', (kv) => watchSeen?.(kv.value.toString()));

  const floor: number[] = [];
  const toFile: number[] = [];
  const dir = d.file('configmaps', 'default', 'bench');
  for (let i = 0; i < puts; i++) {
    const value = `v${i}`;
    const fileSeen = waitForFile(dir, file, value);
    const watch = new Promise<number>((resolve) => (watchSeen = (v) => v === value && resolve(performance.now())));
    const t0 = performance.now();
    await client.put(key).value(value);
    floor.push((await watch) - t0);
    toFile.push((await fileSeen) - t0);
    await sleep(5);
  }
  await watcher.cancel();
  console.log(`put → file on this machine: ${puts} sequential puts, one object, daemon as a child process (${new Date().toISOString()})`);
  console.log(table([{ name: 'etcd put → watch (floor)', samples: floor }, { name: 'put → file (confsync)', samples: toFile }], 'etcd put → watch (floor)'));
} finally {
  client.close();
  await d.cleanup();
  await etcd.stop();
}

function waitForFile(dir: string, file: string, value: string): Promise<number> {
  return new Promise((resolve) => {
    let done = false;
    const check = () => {
      if (done) return;
      if (readOr(file) === value) {
        done = true;
        const t = performance.now();
        w.close();
        clearInterval(poll);
        resolve(t);
      }
    };
    const w = fs.watch(dir, check);
    const poll = setInterval(check, 2);
    check();
  });
}
