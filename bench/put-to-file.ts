/**
 * put → file latency, beside the raw etcd put → watch floor, in the same run.
 *
 *   node dist/bench/run.js --only put-to-file   (200 sequential puts; --quick: 100)
 *   node dist/bench/put-to-file.js --puts 1000
 *
 * For each put: t0 just before the put is sent; "etcd watch" is when this
 * process's own raw watch sees the event (the floor any etcd consumer pays);
 * "put → file" is when the new value is readable at <root>/configmaps/…/<key>
 * in the daemon's projection (fs.watch on the object dir, plus a 2 ms poll).
 *
 * Also home of what the other scenarios share: the put loop (confd.ts runs the
 * very same loop with one more observer), the file waiter, a plain table.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../test/harness/etcd.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { table } from './stats.js';

export interface ScenarioOptions {
  quick: boolean;
}

export const BENCH_KEY = '/confsync/global/configmaps/default/bench/value';

/** Something that sees a put's value arrive: returns when it did (performance.now()). */
export interface Observer {
  name: string;
  /** Called just before the put is sent; resolves when `value` is visible. */
  expect(value: string): Promise<number>;
}

/**
 * The put loop every latency scenario uses: `puts` sequential puts of `v<i>` to
 * `key`, each awaited until every observer saw it, then a 5 ms pause. The first
 * row is always the raw etcd put → watch floor measured by this process.
 */
export async function putLoop(client: Etcd3, key: string, puts: number, observers: Observer[], tag = 'v'): Promise<{ name: string; samples: number[] }[]> {
  const watcher = await client.watch().key(key).create();
  const waiters = new Map<string, (t: number) => void>();
  watcher.on('put', (kv) => {
    const t = performance.now();
    waiters.get(kv.value.toString())?.(t);
  });
  const floor: number[] = [];
  const seen = observers.map(() => [] as number[]);
  try {
    for (let i = 0; i < puts; i++) {
      const value = `${tag}${i}`;
      const watch = withTimeout(new Promise<number>((resolve) => waiters.set(value, resolve)), `etcd watch to see ${value}`);
      const arrivals = observers.map((o) => o.expect(value));
      const t0 = performance.now();
      await client.put(key).value(value);
      floor.push((await watch) - t0);
      waiters.delete(value);
      const times = await Promise.all(arrivals);
      times.forEach((t, j) => seen[j]!.push(t - t0));
      await sleep(5);
    }
  } finally {
    await watcher.cancel();
  }
  return [{ name: 'etcd put → watch (floor)', samples: floor }, ...observers.map((o, j) => ({ name: o.name, samples: seen[j]! }))];
}

/** Resolves with the time `file` (in `dir`) first reads as `value`: fs.watch on the dir plus a 2 ms poll; rejects after timeoutMs. */
export function waitForFile(dir: string, file: string, value: string, timeoutMs = 15_000): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      done = true;
      w?.close();
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
    };
    const check = () => {
      if (done) return;
      if (readOr(file) === value) {
        const t = performance.now();
        finish();
        resolve(t);
      }
    };
    let w: fs.FSWatcher | undefined;
    try {
      w = fs.watch(dir, check);
      w.on('error', () => undefined); // the dir may be replaced; the poll carries on
    } catch {
      /* dir not there yet: the poll alone */
    }
    const poll = setInterval(check, 2);
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${file} = ${value}`)), timeoutMs);
    check();
  });
}

export function fileObserver(name: string, dir: string, file: string): Observer {
  return { name, expect: (value) => waitForFile(dir, file, value) };
}

export function withTimeout<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
  ]);
}

/** A plain fixed-width table: first column left-aligned, the rest right-aligned. */
export function grid(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export const ms = (n: number) => n.toFixed(n >= 100 ? 0 : 2);

/** Runs `fn` over items with at most `limit` in flight. */
export async function pool<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

/** True when this module is the process's entry point (`node dist/bench/x.js`). */
export function isMain(moduleUrl: string): boolean {
  return !!process.argv[1] && moduleUrl === pathToFileURL(process.argv[1]).href;
}

export function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export async function putToFile(opts: ScenarioOptions & { puts?: number }): Promise<string> {
  const puts = opts.puts ?? (opts.quick ? 100 : 200);
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  // log level info: what a user runs (the harness default, debug, adds a line per projection).
  const d = new DaemonProcess({ cluster: 'bench', log: { level: 'info' }, etcd: { endpoints: [etcd.endpoint] } }).start();
  try {
    await d.ready();
    const file = d.file('configmaps', 'default', 'bench', 'value');
    await client.put(BENCH_KEY).value('warmup');
    await until(() => readOr(file) === 'warmup', 'warm-up put');
    const rows = await putLoop(client, BENCH_KEY, puts, [fileObserver('put → file (confsync)', d.file('configmaps', 'default', 'bench'), file)]);
    return [
      `${puts} sequential puts to one key, 5 ms apart; one object; the daemon a child process (log level info); loopback etcd ${etcdVersion()}`,
      table(rows, 'etcd put → watch (floor)'),
    ].join('\n');
  } finally {
    client.close();
    await d.cleanup();
    await etcd.stop();
  }
}

let cachedEtcdVersion: string | undefined;
export const etcdBin = (): string => process.env.CONFSYNC_ETCD_BIN || 'etcd';
export function etcdVersion(): string {
  // The binary the harness starts (CONFSYNC_ETCD_BIN, as `npm run test:etcd36` sets it), else the one on PATH.
  cachedEtcdVersion ??= spawnText(etcdBin(), ['--version']).match(/etcd Version: (\S+)/)?.[1] ?? 'unknown';
  return cachedEtcdVersion;
}

/** The child's pid (the harness keeps its ChildProcess private; benches read /proc with it). */
export function pidOf(d: DaemonProcess): number {
  const pid = (d as unknown as { proc?: { pid?: number } }).proc?.pid;
  if (!pid) throw new Error('daemon not started');
  return pid;
}

/** VmRSS and VmHWM (peak RSS) in MiB, and CPU seconds (user + system), from /proc. */
export function procUsage(pid: number): { rssMiB: number; peakMiB: number; cpuSeconds: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))?.[1] ?? NaN);
  // /proc/<pid>/stat: fields 14 and 15 are utime and stime in clock ticks (100/s on Linux);
  // the command name (field 2) may hold spaces, so count from the closing parenthesis.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024, cpuSeconds: (Number(rest[11]) + Number(rest[12])) / 100 };
}

/** tmpfs, ext4 or the magic number: where a bench's files really go. */
export function fsType(dir: string): string {
  try {
    const t = fs.statfsSync(dir).type;
    return t === 0x01021994 ? 'tmpfs' : t === 0xef53 ? 'ext4' : `fs 0x${t.toString(16)}`;
  } catch {
    return 'unknown fs';
  }
}

/** stdout + stderr of a short command ('' when it cannot run). */
export function spawnText(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`;
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const puts = Number(flag(args, '--puts')) || undefined;
  console.log(`put → file on this machine (${new Date().toISOString()})`);
  console.log(await putToFile({ quick: args.includes('--quick'), puts }));
  process.exit(0);
}
