/**
 * The fail-safes of issue 13, timed (the tests check what they do, never how fast):
 *
 *   node dist/bench/run.js --only snapshot        (10,000 objects; --quick: 2,000)
 *   node dist/bench/snapshot.js [--quick] [--objects N] [--guard N] [--sections write,per-put,guard,offline]
 *
 *  1. snapshot write: the daemon's own SnapshotWriter in this process, sealing
 *     `objects` ConfigMap objects × 10 keys + `objects` sealed secrets to one
 *     identity and writing them (atomic, fsynced) into os.tmpdir(); the longest
 *     the event loop went without a turn during each write beside it.
 *  2. CPU per put with that keyspace loaded (config only), snapshot off (no
 *     identity: no snapshot) vs on with snapshotIntervalSeconds 1 (a write after
 *     every put: what it cost before the interval) and 10 (the default): puts
 *     paced 1.5 s apart, each waited for on disk.
 *  3. mass delete: 2 daemons, `guard` objects (2,000; --quick 500), `etcdctl del
 *     --prefix` → both status keys say `held`; `confsync release` → every file gone.
 *  4. reboot with etcd down: daemon stopped, etcd killed, the files root removed
 *     (tmpfs after a reboot); spawn → every file back from the snapshot; then
 *     etcd back → converged, and which start mode the daemon counted.
 * Figures: median and p99 over the rounds (few rounds: p99 is the max).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { createLogger } from '../src/log.js';
import { SnapshotWriter } from '../src/state/snapshot.js';
import type { Kv } from '../src/source/types.js';
import { DaemonProcess, MAIN } from '../test/harness/daemon.js';
import { startEtcd, type EtcdHandle } from '../test/harness/etcd.js';
import { freePort } from '../test/harness/ports.js';
import { flag, grid, isMain, pidOf, pool, procUsage, type ScenarioOptions } from './put-to-file.js';
import { percentile } from './stats.js';

const P = '/confsync';
const KEYS = 10;

const SECTIONS = ['write', 'per-put', 'guard', 'offline'] as const;
type Opts = ScenarioOptions & { objects?: number; guard?: number; sections?: readonly string[] };

export async function snapshotBench(opts: Opts): Promise<string> {
  const objects = opts.objects ?? (opts.quick ? 2_000 : 10_000);
  const guard = opts.guard ?? (opts.quick ? 500 : 2_000);
  const rounds = opts.quick ? 3 : 10;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-snapbench-'));
  const identity = generateIdentity();
  const idFile = path.join(work, 'identity.key');
  await writeIdentityFile(idFile, identity);
  try {
    const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
    const out: string[] = [`load average at start ${load()} (${os.availableParallelism()} cores): other processes on the machine skew every figure`];
    const want = (s: string) => !opts.sections || opts.sections.includes(s);
    if (want('write')) out.push(await writeSection(objects, rounds, identity.publicKey, work));
    if (want('per-put')) out.push(await perPutSection(objects, opts.quick ? 8 : 20, idFile));
    if (want('guard')) out.push(await guardSection(guard, opts.quick ? 1 : 3));
    if (want('offline')) out.push(await offlineSection(guard, opts.quick ? 2 : 5, idFile));
    out.push(`load average at end ${load()}`);
    return out.join('\n\n');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

const med = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);
const p99 = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 99);
const row = (name: string, xs: number[], unit = 'ms', f = (n: number) => n.toFixed(n >= 100 ? 0 : 1)) => [name, String(xs.length), `${f(med(xs))} ${unit}`, `${f(p99(xs))} ${unit}`];

/** 1. The daemon's writer, in this process, on a keyspace like bench/cold-start.ts's. */
async function writeSection(objects: number, rounds: number, publicKey: Uint8Array, work: string): Promise<string> {
  const kvs: Kv[] = [];
  let rev = 1;
  for (let o = 0; o < objects; o++) {
    for (let k = 0; k < KEYS; k++) kvs.push({ key: `${P}/global/configmaps/ns-${o % 10}/app-${o}/k${k}`, value: Buffer.from(`app-${o}/k${k}=`.padEnd(64, 'x')), modRevision: rev++ });
  }
  const envelope = Buffer.from(await seal(Buffer.from('not-a-real-secret'), 'global/secrets/ns-0/db-0/password', [recipientOf(publicKey)]));
  for (let s = 0; s < objects; s++) kvs.push({ key: `${P}/global/secrets/ns-${s % 10}/db-${s}/password`, value: envelope, modRevision: rev++ });
  const marks = new Map(Array.from({ length: objects }, (_, s) => [`global/secrets/ns-${s % 10}/db-${s}/password`, 1]));
  const stateDir = path.join(work, 'state');
  const times: number[] = [];
  const stalls: number[] = [];
  let bytes = 0;
  const writer = new SnapshotWriter({
    stateDir,
    cluster: 'bench',
    prefix: P,
    publicKeys: [publicKey],
    logger: createLogger('warn', fs.createWriteStream('/dev/null')),
    take: () => ({ revision: rev, kvs, marks }),
    onWritten: (ms, b) => {
      times.push(ms);
      bytes = b;
    },
  });
  for (let i = 0; i < rounds; i++) {
    rev++;
    writer.changed(rev);
    // The longest the loop went without a turn while the write ran.
    let last = performance.now();
    let worst = 0;
    const tick = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 1);
    await writer.flush();
    const now = performance.now();
    worst = Math.max(worst, now - last);
    clearInterval(tick);
    stalls.push(worst);
  }
  await writer.close();
  // The daemon's own write after a change: one journal record of what changed since (1 key, or 100).
  const journalRows: string[][] = [];
  for (const changed of [1, 100]) {
    const jt: number[] = [];
    let jbytes = 0;
    let pending: Kv[] = [];
    const jw = new SnapshotWriter({
      stateDir: path.join(work, `state-j${changed}`),
      cluster: 'bench',
      prefix: P,
      publicKeys: [publicKey],
      logger: createLogger('warn', fs.createWriteStream('/dev/null')),
      take: () => ({ revision: rev, kvs, marks }),
      takeChanges: () => {
        const put = pending;
        pending = [];
        return { revision: rev, put, del: [], marks };
      },
      onWritten: (ms, b, full) => {
        if (full) return;
        jt.push(ms);
        jbytes = b;
      },
    });
    jw.changed(++rev);
    await jw.flush(); // the full write a start begins with
    for (let i = 0; i < rounds * 3; i++) {
      pending = Array.from({ length: changed }, (_, c) => ({ ...kvs[(i * changed + c) % kvs.length], modRevision: rev + 1 }));
      jw.changed(++rev);
      await jw.flush();
    }
    await jw.close();
    journalRows.push(row(`journal record, ${changed} key${changed > 1 ? 's' : ''} changed (${jbytes.toLocaleString('en')} bytes, fdatasync)`, jt));
  }
  return [
    `snapshot write: ${objects.toLocaleString('en')} ConfigMap objects × ${KEYS} keys + ${objects.toLocaleString('en')} sealed secrets (${kvs.length.toLocaleString('en')} keys), ${(bytes / 2 ** 20).toFixed(1)} MiB file in ${os.tmpdir()}; the daemon's SnapshotWriter in this process`,
    grid([['', 'n', 'p50', 'p99'], row('full: seal + write (atomic, fsynced)', times), row('longest event-loop stall during a full write', stalls), ...journalRows]),
  ].join('\n');
}

/** 2. Daemon CPU per put, keyspace loaded, snapshot on vs off. */
async function perPutSection(objects: number, puts: number, idFile: string): Promise<string> {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const rows: string[][] = [['keyspace loaded, one put every 1.5 s, waited for on disk', 'n', 'CPU per put p50', 'mean']];
  try {
    const items: [string, string][] = [];
    for (let o = 0; o < objects; o++) for (let k = 0; k < KEYS; k++) items.push([`${P}/global/configmaps/ns-${o % 10}/app-${o}/k${k}`, `app-${o}/k${k}=`.padEnd(64, 'x')]);
    await pool(items, 64, async ([k, v]) => void (await client.put(k).value(v)));
    for (const interval of [undefined, 1, 10]) {
      const on = interval !== undefined;
      const d = new DaemonProcess({ cluster: 'bench', etcd: { endpoints: [etcd.endpoint] }, log: { level: 'info' }, ...(on ? { identity: idFile, snapshotIntervalSeconds: interval } : {}) });
      try {
        d.start();
        await waitFor(() => d.log.includes('first full sync'), 'first full sync', 600_000);
        const file = d.file('configmaps', 'ns-0', 'app-0', 'k0');
        await sleep(3000); // the first snapshot after the sync
        const pid = pidOf(d);
        const cpu: number[] = [];
        for (let i = 0; i < puts; i++) {
          const c0 = procUsage(pid).cpuSeconds;
          const value = `put-${i}-${Date.now()}`;
          const t = performance.now();
          await client.put(`${P}/global/configmaps/ns-0/app-0/k0`).value(value);
          await waitFor(() => readOr(file) === value, 'put on disk');
          await sleep(Math.max(0, 1500 - (performance.now() - t)));
          cpu.push((procUsage(pid).cpuSeconds - c0) * 1000);
        }
        const mean = cpu.reduce((a, b) => a + b, 0) / cpu.length;
        const name = !on ? 'snapshot off (no identity)' : interval === 1 ? 'snapshot on, snapshotIntervalSeconds 1 (a write after every put)' : `snapshot on, snapshotIntervalSeconds ${interval} (the default)`;
        rows.push([name, String(cpu.length), `${med(cpu).toFixed(0)} ms`, `${mean.toFixed(1)} ms`]);
      } finally {
        await d.cleanup();
      }
    }
  } finally {
    client.close();
    await etcd.stop();
  }
  return [
    `daemon CPU per put (user + system, /proc, 10 ms ticks) with ${objects.toLocaleString('en')} ConfigMap objects × ${KEYS} keys loaded; each put's window is 1.5 s, snapshot writes included`,
    grid(rows),
  ].join('\n');
}

/** 3. Mass delete with 2 daemons: held on both, then released. */
async function guardSection(n: number, rounds: number): Promise<string> {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const cfg = (node: string) => ({ cluster: 'eu', node, etcd: { endpoints: [etcd.endpoint] }, status: { intervalSeconds: 0.2 }, log: { level: 'info' } });
  const daemons = [new DaemonProcess(cfg('n1')), new DaemonProcess(cfg('n2'))];
  const held: number[] = [];
  const released: number[] = [];
  const count = (d: DaemonProcess) => {
    const dir = path.join(d.root, 'configmaps', 'default');
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((e) => e.startsWith('o-')).length : 0;
  };
  const heldOn = async (node: string) => {
    const v = await client.get(`${P}/status/eu/${node}`).string();
    return v ? (JSON.parse(v).held?.count as number | undefined) : undefined;
  };
  try {
    for (const d of daemons) d.start();
    for (let r = 0; r < rounds; r++) {
      await pool(Array.from({ length: n }, (_, i) => i), 64, async (i) => void (await client.put(`${P}/global/configmaps/default/o-${i}/k`).value(`v${r}`)));
      await waitFor(() => daemons.every((d) => count(d) === n), `${n} objects on both nodes`, 600_000);
      await sleep(500);
      const t0 = performance.now();
      etcd.ctl('del', '--prefix', `${P}/global/configmaps/default/o-`);
      await waitFor(async () => (await heldOn('n1')) === n && (await heldOn('n2')) === n, 'held on both', 60_000);
      held.push(performance.now() - t0);
      if (daemons.some((d) => count(d) !== n)) throw new Error('a file was removed while held');
      const t1 = performance.now();
      const rel = spawnSync(process.execPath, [MAIN, 'release', '--cluster', 'eu', '--endpoints', etcd.endpoint], { encoding: 'utf8' });
      if (rel.status !== 0) throw new Error(`confsync release failed: ${rel.stderr}`);
      await waitFor(() => daemons.every((d) => count(d) === 0), 'released removals done', 600_000);
      released.push(performance.now() - t1);
    }
  } finally {
    client.close();
    for (const d of daemons) await d.cleanup();
    await etcd.stop();
  }
  return [
    `mass delete: ${n.toLocaleString('en')} objects, 2 daemons (status interval 0.2 s), \`etcdctl del --prefix\` in one revision; ${rounds} round(s)`,
    grid([['', 'n', 'p50', 'p99'], row('del → both status keys say held (count = all)', held), row('`confsync release` spawned → every file gone on both nodes', released)]),
  ].join('\n');
}

/** 4. A reboot with etcd down: the files back from the snapshot; then etcd back. */
async function offlineSection(n: number, rounds: number, idFile: string): Promise<string> {
  const etcd: EtcdHandle = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const port = await freePort();
  let d = new DaemonProcess({ cluster: 'eu', identity: idFile, etcd: { endpoints: [etcd.endpoint] }, metrics: { listen: `127.0.0.1:${port}` }, log: { level: 'info' } });
  const files: number[] = [];
  const serving: number[] = [];
  const converged: number[] = [];
  const modes: string[] = [];
  const count = () => {
    const dir = path.join(d.root, 'configmaps', 'default');
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((e) => fs.existsSync(path.join(dir, e, 'k'))).length : 0;
  };
  try {
    await pool(Array.from({ length: n }, (_, i) => i), 64, async (i) => void (await client.put(`${P}/global/configmaps/default/o-${i}/k`).value('v')));
    d.start();
    await waitFor(() => count() === n, 'first sync', 600_000);
    for (let r = 0; r < rounds; r++) {
      await waitFor(() => fs.existsSync(path.join(d.dir, 'state', 'snapshot')), 'snapshot written');
      await sleep(1500); // the snapshot follows the last change
      await d.signal('SIGTERM');
      await etcd.kill();
      fs.rmSync(d.root, { recursive: true, force: true });
      const config = fs.readFileSync(d.configFile);
      d = new DaemonProcess({}, d.dir);
      fs.writeFileSync(d.configFile, config);
      const t0 = performance.now();
      d.start();
      await waitFor(() => d.log.includes('serving from the local snapshot'), 'offline start', 120_000);
      serving.push(performance.now() - t0);
      await waitFor(() => count() === n, 'files back from the snapshot', 120_000);
      files.push(performance.now() - t0);
      // etcd back, with one change made "meanwhile" (written now, before the daemon sees etcd).
      await etcd.start();
      const t1 = performance.now();
      await client.put(`${P}/global/configmaps/default/o-0/k`).value(`back-${r}`);
      await waitFor(() => readOr(path.join(d.root, 'configmaps', 'default', 'o-0', 'k')) === `back-${r}` && d.log.includes('first full sync'), 'converged', 120_000);
      converged.push(performance.now() - t1);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      modes.push(['snapshot-resume', 'list'].find((m) => new RegExp(`^confsync_start_mode_total\\{mode="${m}"\\} 1`, 'm').test(metrics)) ?? '?');
    }
  } finally {
    client.close();
    await d.cleanup();
    await etcd.stop();
  }
  const tally = [...new Set(modes)].map((m) => `${m} ×${modes.filter((x) => x === m).length}`).join(', ');
  return [
    `reboot with etcd down: ${n.toLocaleString('en')} objects, the files root removed before each start; ${rounds} round(s); resumed as: ${tally}`,
    grid([
      ['', 'n', 'p50', 'p99'],
      row('spawn (etcd down) → log "serving from the local snapshot"', serving),
      row('spawn (etcd down) → every file back from the snapshot', files),       row('etcd back → a change made meanwhile on disk, first full sync logged', converged),
    ]),
  ].join('\n');
}

async function waitFor(probe: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const sections = flag(args, '--sections')?.split(',');
  if (sections?.some((x) => !(SECTIONS as readonly string[]).includes(x))) {
    console.error(`usage: node dist/bench/snapshot.js [--quick] [--objects N] [--guard N] [--sections ${SECTIONS.join(',')}]`);
    process.exit(2);
  }
  console.log(await snapshotBench({ quick: args.includes('--quick'), objects: Number(flag(args, '--objects')) || undefined, guard: Number(flag(args, '--guard')) || undefined, sections }));
  process.exit(0);
}
