/**
 * Fan-out: many daemons on one etcd; how long from a put until all have applied it.
 *
 *   node dist/bench/run.js --only fan-out   (200 instances; --quick: 50)
 *   node dist/bench/fan-out.js --instances 200 --per-process 10 --rounds 10 [--proxy]
 *
 * `--proxy`: the instances watch through `etcd grpc-proxy start` (etcd's own proxy,
 * which serves identical watches from one upstream watch) instead of etcd itself.
 * Either way the table prints etcd's own CPU per put (and the proxy's), read from
 * /proc over the measured rounds.
 *
 * Hosting: one `confsync run` process costs ~150 MB RSS (measured first, in the
 * same run), so 200 of them do not fit in 24 GiB; the instances run as P
 * processes of bench/multi-daemon.ts, each hosting K real daemons (`startDaemon`:
 * own etcd client, watch, status lease, file root). The table says P and K.
 *
 * Each round: put one key; "files" is when each instance's projected file reads
 * the new value (fs.watch per object dir plus a 5 ms sweep of the pending ones);
 * "status --wait" is when `confsync status --wait --revision <the put's revision>`,
 * started right after the put returned, exits 0 — it includes the CLI's own
 * start-up, measured on its own and printed beside it, and the daemons' status
 * interval (status.intervalSeconds, default 2 s: a daemon rewrites its status key
 * on that tick, not on apply).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { stringify } from 'yaml';
import { startEtcd, startGrpcProxy } from '../test/harness/etcd.js';
import { DaemonProcess, MAIN, readOr, until } from '../test/harness/daemon.js';
import { table } from './stats.js';
import { flag, grid, isMain, pidOf, procUsage, withTimeout, type ScenarioOptions } from './put-to-file.js';

const MULTI = fileURLToPath(new URL('./multi-daemon.js', import.meta.url));
const KEY = '/confsync/global/configmaps/default/fanout/value';

export async function fanOut(opts: ScenarioOptions & { instances?: number; perProcess?: number; rounds?: number; proxy?: boolean }): Promise<string> {
  const n = opts.instances ?? (opts.quick ? 50 : 200);
  const k = opts.perProcess ?? 10;
  const rounds = opts.rounds ?? (opts.quick ? 3 : 10);
  const procs = Math.ceil(n / k);
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-fanout-'));
  const children: ChildProcess[] = [];
  const proxy = opts.proxy ? await startGrpcProxy([etcd.endpoint]) : undefined;
  const daemonEndpoint = proxy?.endpoint ?? etcd.endpoint;
  try {
    // --- start-up cost of one ordinary `confsync run` process, for the hosting decision
    const single = new DaemonProcess({ cluster: 'bench', node: 'single', log: { level: 'info' }, etcd: { endpoints: [etcd.endpoint] } });
    const ts = performance.now();
    single.start();
    await single.ready(); // "confsync started" and "listed etcd" logged (nothing to sync yet)
    const singleReadyMs = performance.now() - ts;
    await sleep(500);
    const singleUse = procUsage(pidOf(single));
    await single.signal('SIGTERM');
    await single.cleanup();

    // --- the fleet: P processes × K daemons
    const configs: string[] = [];
    for (let i = 0; i < n; i++) {
      const d = path.join(dir, `i${i}`);
      fs.mkdirSync(d);
      const file = path.join(d, 'config.yaml');
      fs.writeFileSync(
        file,
        stringify({ cluster: 'bench', node: `n${String(i).padStart(4, '0')}`, etcd: { endpoints: [daemonEndpoint] }, sinks: { files: { root: path.join(d, 'out') } }, stateDir: path.join(d, 'state'), log: { level: 'warn' } }),
      );
      configs.push(file);
    }
    const t0 = performance.now();
    const started: Promise<void>[] = [];
    for (let p = 0; p < procs; p++) {
      const child = spawn(process.execPath, [MULTI, '--log', path.join(dir, `p${p}.log`), ...configs.slice(p * k, (p + 1) * k)], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (out += d));
      started.push(until(() => out.includes('started') || (child.exitCode !== null && Promise.reject(new Error(`multi-daemon ${p} exited: ${out}`))), `process ${p}`, 120_000).then(() => undefined));
    }
    await Promise.all(started);
    const fleetStartedMs = performance.now() - t0;
    let seen = { keys: 0, ready: 0 };
    await until(
      async () => {
        const all = (await statuses(client)).filter((s) => s.node.startsWith('n'));
        seen = { keys: all.length, ready: all.filter((s) => s.ready).length };
        return seen.ready === n || undefined;
      },
      `${n} ready status keys`,
      180_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (${seen.keys} status keys, ${seen.ready} ready)`);
    });
    const fleetReadyMs = performance.now() - t0;
    await sleep(1000);
    const usage = children.map((c) => procUsage(c.pid!));
    const rssTotal = usage.reduce((a, u) => a + u.rssMiB, 0);
    const cpuTotal = usage.reduce((a, u) => a + u.cpuSeconds, 0);

    const files = configs.map((c) => path.join(path.dirname(c), 'out', 'configmaps', 'default', 'fanout', 'value'));
    await client.put(KEY).value('warmup');
    await allFiles(files, 'warmup', 60_000);
    await sleep(2500); // let every status settle after the warm-up

    const cliAlone: number[] = [];
    for (let i = 0; i < 3; i++) {
      const waiter = statusWaiter(etcd.endpoint);
      await sleep(200);
      const t = performance.now();
      await waiter.go(1);
      cliAlone.push(performance.now() - t);
    }

    const etcdCpu = () => procUsage(etcd.pid()!).cpuSeconds;
    const proxyCpu = () => (proxy ? procUsage(proxy.pid).cpuSeconds : 0);
    const [etcd0, proxy0] = [etcdCpu(), proxyCpu()];
    const watcher = await client.watch().key(KEY).create();
    const floor: number[] = [];
    const first: number[] = [];
    const median: number[] = [];
    const all: number[] = [];
    const viaStatus: number[] = [];
    const statusFailures: string[] = [];
    try {
      for (let r = 0; r < rounds; r++) {
        const value = `f${r}`;
        const watched = withTimeout(new Promise<number>((resolve) => watcher.once('put', () => resolve(performance.now()))), 'floor watch');
        const arrivals = allFiles(files, value, 60_000);
        const waiter = statusWaiter(etcd.endpoint); // spawned before the put: fork() would stall this loop mid-measurement
        await sleep(200);
        const tp = performance.now();
        const res = await client.put(KEY).value(value);
        // A node whose status stays behind fails its round's `status --wait` (30 s): said below the table, the run goes on.
        const status = waiter.go(Number(res.header.revision)).then(
          () => performance.now(),
          (err: Error) => void statusFailures.push(`round ${r + 1}: ${err.message.slice(0, 300)}`),
        );
        floor.push((await watched) - tp);
        const times = (await arrivals).map((t) => t - tp).sort((a, b) => a - b);
        first.push(times[0]!);
        median.push(times[Math.floor(times.length / 2)]!);
        all.push(times[times.length - 1]!);
        const statusAt = await status;
        if (statusAt !== undefined) viaStatus.push(statusAt - tp);
        await sleep(1500);
      }
    } finally {
      await watcher.cancel();
    }
    // Over the rounds: the puts, their fan-out and each instance's status write (and the sleeps' idle).
    const etcdPerPut = ((etcdCpu() - etcd0) * 1000) / rounds;
    const proxyPerPut = ((proxyCpu() - proxy0) * 1000) / rounds;

    const hosting = `${procs} process(es) of bench/multi-daemon.ts × ${k} daemons each (startDaemon in-process; own etcd client, watch, status lease, file root each)`;
    return [
      `${n} daemon instances on one etcd${proxy ? ', watching through `etcd grpc-proxy`' : ''}; ${hosting}`,
      grid([
        ['start-up cost', 'started s', 'ready s', 'RSS MiB', 'RSS MiB / instance', 'CPU s'],
        ['1 `confsync run` process, alone (ready = listed etcd)', '', (singleReadyMs / 1000).toFixed(2), singleUse.rssMiB.toFixed(0), singleUse.rssMiB.toFixed(0), singleUse.cpuSeconds.toFixed(2)],
        [`${n} instances in ${procs} processes (ready = every status key ready)`, (fleetStartedMs / 1000).toFixed(2), (fleetReadyMs / 1000).toFixed(2), rssTotal.toFixed(0), (rssTotal / n).toFixed(1), cpuTotal.toFixed(2)],
        [`${n} × \`confsync run\` (extrapolated from the first row)`, '', '', (singleUse.rssMiB * n).toFixed(0), singleUse.rssMiB.toFixed(0), (singleUse.cpuSeconds * n).toFixed(0)],
      ]),
      '',
      `${rounds} rounds: one put, then until every instance has it (n = rounds; each sample is one round)`,
      table(
        [
          { name: 'etcd put → watch (floor)', samples: floor },
          { name: 'files: first instance', samples: first },
          { name: 'files: median instance', samples: median },
          { name: `files: all ${n} instances`, samples: all },
          ...(viaStatus.length ? [{ name: 'status --wait --revision exits 0', samples: viaStatus }] : []),
          { name: '  of which CLI start-up alone', samples: cliAlone },
        ],
        'etcd put → watch (floor)',
      ),
      `etcd CPU per round (one put, its fan-out, the instances' status writes): ${etcdPerPut.toFixed(1)} ms${proxy ? `; grpc-proxy CPU per round: ${proxyPerPut.toFixed(1)} ms` : ''}`,
      ...statusFailures.map((f) => `status --wait failed in ${f}`),
    ].join('\n');
  } finally {
    client.close();
    await Promise.all(children.map((c) => stopChild(c)));
    await proxy?.stop();
    await etcd.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function statuses(client: Etcd3): Promise<{ node: string; ready: boolean; revision: number }[]> {
  const kvs = await client.getAll().prefix('/confsync/status/bench/').strings();
  return Object.values(kvs).map((v) => JSON.parse(v));
}

/**
 * `confsync status --wait --revision <rev>`, spawned ahead as a shell that reads the
 * revision from stdin and then execs the CLI: `go(rev)` costs a pipe write, not a
 * fork of this process; Node's start-up still counts, as it does in a pipeline.
 * Resolves on exit 0.
 */
function statusWaiter(endpoint: string): { go(revision: number): Promise<void> } {
  const script = `read rev; exec "$0" "$1" status --wait --revision "$rev" --timeout 30 --endpoints "$2"`;
  const c = spawn('sh', ['-c', script, process.execPath, MAIN, endpoint], { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  c.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((resolve, reject) =>
    c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`status --wait exited ${code}: ${err.trim()}`)))),
  );
  return {
    go(revision) {
      c.stdin!.end(`${revision}\n`);
      return exited;
    },
  };
}

/** When each file first read `value` (performance.now()), in `files` order. */
function allFiles(files: string[], value: string, timeoutMs: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const times: number[] = new Array(files.length).fill(NaN);
    const pending = new Set(files.map((_, i) => i));
    const watchers: fs.FSWatcher[] = [];
    const check = (i: number) => {
      if (!pending.has(i)) return;
      if (readOr(files[i]!) === value) {
        times[i] = performance.now();
        pending.delete(i);
        if (pending.size === 0) finish();
      }
    };
    const finish = (err?: Error) => {
      clearInterval(sweep);
      clearTimeout(timer);
      for (const w of watchers) w.close();
      if (err) reject(err);
      else resolve(times);
    };
    files.forEach((f, i) => {
      try {
        const w = fs.watch(path.dirname(f), () => check(i));
        w.on('error', () => undefined);
        watchers.push(w);
      } catch {
        /* not there yet: the sweep */
      }
    });
    const sweep = setInterval(() => pending.forEach(check), 5);
    const timer = setTimeout(() => finish(new Error(`timed out: ${pending.size} of ${files.length} instances never showed ${value}`)), timeoutMs);
    files.forEach((_, i) => check(i));
  });
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(t);
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(
    await fanOut({
      quick: args.includes('--quick'),
      instances: Number(flag(args, '--instances')) || undefined,
      perProcess: Number(flag(args, '--per-process')) || undefined,
      rounds: Number(flag(args, '--rounds')) || undefined,
      proxy: args.includes('--proxy'),
    }),
  );
  process.exit(0);
}
