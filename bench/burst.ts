/**
 * Burst: many updates to few objects, as fast as etcd takes them.
 *
 *   node dist/bench/run.js --only burst   (10,000 updates over 100 objects; --quick: 2,000)
 *   node dist/bench/burst.js --updates 10000
 *
 * 100 objects of one key each are created and projected first. Then update i
 * puts value ⌊i/100⌋+1 to object i mod 100, 64 puts in flight. Reported: how many
 * `..data` swaps each object got (the daemon logs "object written" per swap at
 * info level; the total is cross-checked with confsync_writes_total{sink="files"}),
 * and the time from the last put's response until every file holds its final
 * value (final = what etcd holds afterwards; polled every 5 ms). Baseline in the
 * same run: when this process's own raw watch on the prefix delivered the last event.
 */
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../test/harness/etcd.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { freePort } from '../test/harness/ports.js';
import { percentile } from './stats.js';
import { flag, grid, isMain, ms, pool, withTimeout, type ScenarioOptions } from './put-to-file.js';

const OBJECTS = 100;
const PREFIX = '/confsync/global/configmaps/burst/';

export async function burst(opts: ScenarioOptions & { updates?: number }): Promise<string> {
  const updates = opts.updates ?? (opts.quick ? 2_000 : 10_000);
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const port = await freePort();
  const d = new DaemonProcess({ cluster: 'bench', log: { level: 'info' }, etcd: { endpoints: [etcd.endpoint] }, metrics: { listen: `127.0.0.1:${port}` } }).start();
  try {
    await d.ready();
    const names = Array.from({ length: OBJECTS }, (_, i) => `obj-${String(i).padStart(3, '0')}`);
    const file = (name: string) => path.join(d.root, 'configmaps', 'burst', name, 'value');
    await pool(names, 64, async (n) => void (await client.put(`${PREFIX}${n}/value`).value('0')));
    await until(() => names.every((n) => readOr(file(n)) === '0'), 'initial objects', 30_000);
    await sleep(500);
    const writesBefore = await filesWrites(port);
    const logFrom = d.log.length;

    // the raw watch: the floor for "the last event reached a consumer"
    const watcher = await client.watch().prefix(PREFIX).create();
    let lastEventAt = 0;
    let events = 0;
    const allEvents = new Promise<void>((resolve) =>
      watcher.on('put', () => {
        lastEventAt = performance.now();
        if (++events === updates) resolve();
      }),
    );

    const t0 = performance.now();
    await pool(
      Array.from({ length: updates }, (_, i) => i),
      64,
      async (i) => void (await client.put(`${PREFIX}${names[i % OBJECTS]}/value`).value(String(Math.floor(i / OBJECTS) + 1))),
    );
    const tLast = performance.now();
    const final = await client.getAll().prefix(PREFIX).strings();
    const want = new Map(names.map((n) => [n, final[`${PREFIX}${n}/value`]!]));
    let converged = 0;
    const deadline = Date.now() + 120_000;
    while (!converged) {
      if (names.every((n) => readOr(file(n)) === want.get(n))) converged = performance.now();
      else if (Date.now() > deadline) throw new Error('files never converged on the final values');
      else await sleep(5);
    }
    await withTimeout(allEvents, 'raw watch to deliver every event', 30_000);
    await watcher.cancel();
    await sleep(1000); // trailing swaps, if any, still count
    const swaps = (await filesWrites(port)) - writesBefore;
    const perObject = new Map(names.map((n) => [`configmaps/burst/${n}`, 0]));
    for (const line of d.log.slice(logFrom).split('\n')) {
      if (!line.includes('"msg":"object written"') || !line.includes('"sink":"files"')) continue;
      const id = JSON.parse(line).object as string;
      if (perObject.has(id)) perObject.set(id, perObject.get(id)! + 1);
    }
    const counts = [...perObject.values()].sort((a, b) => a - b);
    const logged = counts.reduce((a, b) => a + b, 0);

    const putSeconds = (tLast - t0) / 1000;
    return [
      `${updates.toLocaleString('en')} updates over ${OBJECTS} objects (one key each, ${updates / OBJECTS} per object), 64 puts in flight: ${putSeconds.toFixed(2)} s, ${Math.round(updates / putSeconds).toLocaleString('en')} puts/s`,
      grid([
        ['after the last put returned', 'ms'],
        ['raw watch delivered the last event (baseline)', ms(lastEventAt - tLast)],
        [`every one of the ${OBJECTS} files holds its final value`, ms(converged - tLast)],
      ]),
      grid([
        ['..data swaps per object', 'min', 'p50', 'p99', 'max', 'total', 'per update'],
        [
          `from the daemon's "object written" lines (metric: ${swaps})`,
          String(counts[0]),
          String(percentile(counts, 50)),
          String(percentile(counts, 99)),
          String(counts.at(-1)),
          String(logged),
          (logged / updates).toFixed(3),
        ],
      ]),
    ].join('\n');
  } finally {
    client.close();
    await d.cleanup();
    await etcd.stop();
  }
}

/** confsync_writes_total{sink="files"} from /metrics. */
async function filesWrites(port: number): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
  const m = text.match(/^confsync_writes_total\{sink="files"\} (\d+)/m);
  return m ? Number(m[1]) : 0;
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(await burst({ quick: args.includes('--quick'), updates: Number(flag(args, '--updates')) || undefined }));
  process.exit(0);
}
