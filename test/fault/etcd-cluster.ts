/**
 * The fault suite's own harness (test/harness/ stays as it is):
 *
 *  - `startEtcdCluster`: three real etcd members on free loopback ports, joined
 *    with --initial-cluster, fast election flags; each member can be killed and
 *    restarted on its ports and data; `status()` reads `etcdctl endpoint status`
 *    (leader = the member whose `header.member_id` equals `Status.leader`).
 *  - `writerClient` / `commit`: an etcd client for test writers that owns its
 *    retries (no circuit breaker, 1 s gRPC reconnect cap, a deadline per call)
 *    and a multi-key transaction, so one object changes at one revision.
 *  - `faultValue` / `parseFaultValue`: self-checking values `v<N>|<key>|<len>|`
 *    then padding to <len> bytes; a partial or foreign file does not parse.
 *  - `startSampler`: a reader in a worker thread that loops over object dirs
 *    reading every key through the user-visible `<dir>/<key>` link, bracketing
 *    each pass with `readlink(..data)` (as test/helpers/reader-worker.ts does),
 *    and records what a user of the files would have seen over time.
 *
 * This file is also the worker's entry point (guarded by `workerData`), so the
 * sampler needs no file of its own; it is not a *.test.ts file, so `node --test`
 * never runs it directly.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { NoopPolicy } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { etcdBinaries } from '../harness/etcd.js';
import { freePort } from '../harness/ports.js';
import { startProxy, type FaultProxy } from '../harness/proxy.js';

// ---------------------------------------------------------------- etcd cluster

export interface EtcdMember {
  readonly name: string;
  readonly endpoint: string;
  readonly running: boolean;
  /** (Re)start on the same ports and data dir; resolves once the member answers health checks. */
  start(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Send a signal without waiting (SIGSTOP/SIGCONT: a member that hangs, then wakes). */
  signal(signal: NodeJS.Signals): void;
}

export interface MemberStatus {
  index: number;
  memberId: string;
  leaderId: string;
  revision: number;
  raftTerm: string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  endpoints: string[];
  /** etcdctl against the given endpoints; throws with stderr on failure. */
  ctl(endpoints: string[], ...args: string[]): string;
  /** `endpoint status` of every running member (ids kept as strings: they are uint64). */
  status(): MemberStatus[];
  /** Index of the member every running member agrees is the leader (waits for one). */
  leader(timeoutMs?: number): Promise<number>;
  /**
   * Cut member i off from the other members, both ways, keeping its client port up
   * (it stays alive and answers clients, without a leader). Needs `peerProxies`.
   */
  partition(i: number): void;
  heal(i: number): void;
  stop(): Promise<void>;
}

/**
 * `peerProxies`: every member advertises a fault proxy in front of its peer port, so
 * all member-to-member traffic passes a proxy that knows the sender (etcd's peer HTTP
 * requests carry the sender's peer URLs in `X-PeerURLs`); `partition(i)` then cuts
 * member i off both ways while clients still reach it.
 */
export async function startEtcdCluster(size = 3, opts: { peerProxies?: boolean } = {}): Promise<EtcdCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-etcd3-'));
  const ports: { client: number; peer: number; advertised: number }[] = [];
  for (let i = 0; i < size; i++) {
    const [client, peer] = [await freePort(), await freePort()];
    ports.push({ client, peer, advertised: opts.peerProxies ? await freePort() : peer });
  }
  const names = ports.map((_, i) => `m${i}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]!.advertised}`).join(',');
  // In a worker thread: this thread blocks in spawnSync(etcdctl) now and then, and a
  // proxy on this thread's event loop would then hold every raft message meanwhile.
  const proxies = opts.peerProxies ? await startPeerProxies(ports) : undefined;
  const token = path.basename(dir);
  const bins = etcdBinaries();

  const ctl = (endpoints: string[], ...args: string[]) => {
    const r = spawnSync(bins.etcdctl, ['--endpoints', endpoints.join(','), '--command-timeout=2s', ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
    if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };

  const members = names.map((name, i): EtcdMember & { spawn(): void } => {
    const endpoint = `http://127.0.0.1:${ports[i]!.client}`;
    const peer = `http://127.0.0.1:${ports[i]!.peer}`;
    const advertisedPeer = `http://127.0.0.1:${ports[i]!.advertised}`;
    const dataDir = path.join(dir, name);
    fs.mkdirSync(dataDir, { mode: 0o700 });
    // Heartbeat 25 ms / election 250 ms: elections well under a second, yet no
    // spurious leader changes on a loaded 2-core machine (10/100 flaps there).
    // A restarted member finds its WAL in dataDir and ignores the --initial-* flags.
    const args = [
      '--name', name, '--data-dir', dataDir,
      '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', advertisedPeer,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', token,
      '--heartbeat-interval=25', '--election-timeout=250', '--logger', 'zap', '--log-level', process.env.CONFSYNC_ETCD_LOG || 'error',
    ];
    let proc: ChildProcess | undefined;
    let stderr = '';
    const m = {
      name,
      endpoint,
      get running() {
        return !!proc && proc.exitCode === null && proc.signalCode === null;
      },
      spawn() {
        stderr = '';
        proc = spawn(bins.etcd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        proc.stderr!.on('data', (d) => { stderr += d; if (process.env.CONFSYNC_ETCD_LOG) process.stderr.write(d); });
      },
      async start() {
        m.spawn();
        await waitHealthy([endpoint], () => (proc!.exitCode !== null ? `etcd ${name} exited ${proc!.exitCode}: ${stderr}` : undefined));
      },
      signal(signal: NodeJS.Signals) {
        proc?.kill(signal);
      },
      async kill(signal: NodeJS.Signals = 'SIGKILL') {
        const p = proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill(signal);
        await exited;
      },
    };
    return m;
  });

  async function waitHealthy(endpoints: string[], died: () => string | undefined, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const why = died();
      if (why) throw new Error(why);
      const r = spawnSync(bins.etcdctl, ['--endpoints', endpoints.join(','), '--command-timeout=1s', 'endpoint', 'health'], { encoding: 'utf8' });
      if (r.status === 0) return;
      if (Date.now() > deadline) throw new Error(`etcd cluster not healthy on ${endpoints.join(',')}: ${r.stderr.trim()}`);
      await sleep(50);
    }
  }

  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.endpoint),
    ctl,
    status() {
      const out: MemberStatus[] = [];
      members.forEach((m, index) => {
        if (!m.running) return;
        let text: string;
        try {
          text = ctl([m.endpoint], 'endpoint', 'status', '-w', 'json');
        } catch {
          return; // not answering (yet)
        }
        // uint64 ids do not survive JSON.parse as numbers: quote them first.
        const [s] = JSON.parse(text.replace(/"(cluster_id|member_id|leader|raft_term|raftIndex|raftTerm|raftAppliedIndex)":(\d+)/g, '"$1":"$2"'));
        out.push({ index, memberId: s.Status.header.member_id, leaderId: s.Status.leader, revision: Number(s.Status.header.revision), raftTerm: s.Status.raftTerm });
      });
      return out;
    },
    async leader(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const st = cluster.status();
        const leaders = new Set(st.map((s) => s.leaderId));
        const leader = st.find((s) => s.memberId === s.leaderId);
        if (st.length > 0 && leaders.size === 1 && leader && leader.leaderId !== '0') return leader.index;
        if (Date.now() > deadline) throw new Error(`no agreed leader: ${JSON.stringify(st)}`);
        await sleep(50);
      }
    },
    partition(i: number) {
      if (!proxies) throw new Error('partition() needs startEtcdCluster(n, { peerProxies: true })');
      proxies.postMessage({ type: 'partition', member: i });
    },
    heal(i: number) {
      proxies?.postMessage({ type: 'heal', member: i });
    },
    async stop() {
      await proxies?.terminate();
      for (const m of members) {
        m.signal('SIGCONT'); // a stopped process takes SIGKILL too, but then its exit is reported late
        await m.kill();
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  for (const m of members) m.spawn();
  try {
    await waitHealthy(cluster.endpoints, () => undefined, opts.peerProxies ? 60_000 : 20_000);
    await cluster.leader();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

type PeerPorts = { peer: number; advertised: number }[];

/** One fault proxy per member in front of its peer port, in a worker thread (see startEtcdCluster). */
async function startPeerProxies(ports: PeerPorts): Promise<Worker> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { confsyncPeerProxies: ports } });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  return worker;
}

if (!isMainThread && parentPort && (workerData as { confsyncPeerProxies?: PeerPorts })?.confsyncPeerProxies) {
  const ports = (workerData as { confsyncPeerProxies: PeerPorts }).confsyncPeerProxies;
  // The sending member, from the `X-PeerURLs` header etcd puts on its peer HTTP requests.
  const senderOf = (first: Buffer) => {
    const m = /\r\nX-Peerurls: *([^\r]*)/i.exec(first.subarray(0, 4096).toString('latin1'));
    const i = m ? ports.findIndex((p) => m[1]!.includes(`:${p.advertised}`)) : -1;
    return i >= 0 ? `m${i}` : undefined;
  };
  const port = parentPort;
  void Promise.all(ports.map((p) => startProxy(`http://127.0.0.1:${p.peer}`, { port: p.advertised, label: senderOf }))).then((proxies: FaultProxy[]) => {
    port.on('message', (m: { type: 'partition' | 'heal'; member: number }) => {
      proxies.forEach((p, j) => {
        const label = j === m.member ? undefined : `m${m.member}`; // all of i's inbound; i's outbound at the others
        if (m.type === 'partition') p.cut(label);
        else p.restore(label);
      });
    });
    port.postMessage({ type: 'ready' });
  });
}

// ---------------------------------------------------------------- writers

/**
 * A client for test writers: confsync's own retry habits (no circuit breaker,
 * gRPC reconnect backoff capped at 1 s) plus a deadline on every unary call, so
 * a put to a member that lost its leader fails fast and the writer retries.
 */
export function writerClient(endpoints: string[], callTimeoutMs = 2000): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    dialTimeout: 1000,
    grpcOptions: {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.min_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
    faultHandling: { host: () => new NoopPolicy(), global: new NoopPolicy() },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
  });
}

/** Puts and deletes in one transaction (one revision); returns that revision. */
export async function commit(client: Etcd3, puts: [string, Buffer | string][], deletes: string[] = []): Promise<number> {
  const ops = [...puts.map(([k, v]) => client.put(k).value(v)), ...deletes.map((k) => client.delete().key(k))];
  // `mod_revision > -1` holds for every key, present or not: an unconditional txn.
  const res = await client.if(puts[0]?.[0] ?? deletes[0]!, 'Mod', '>', -1).then(...ops).commit();
  return Number(res.header.revision);
}

/**
 * `commit` until it succeeds (etcd down, leader lost, deadline): returns the revision, ack time and attempts.
 *
 * `after` (the revision of this writer's previous ack) makes the write safe to retry on a
 * cluster with a hung or partitioned member: the transaction applies only while its first
 * key was last changed at or before `after`. Without it, an attempt whose deadline expired
 * while a stopped member held it is applied when that member resumes — after later writes
 * were acked — and etcd itself goes back to the older value (seen in cluster.test.ts: etcd's
 * history held v62 at a revision after v200). With it such a stale attempt fails its compare;
 * a failed compare of the current write means an earlier attempt of it landed, which is
 * checked by value.
 */
export async function commitUntilAcked(
  client: Etcd3,
  puts: [string, Buffer | string][],
  deletes: string[] = [],
  retryMs = 100,
  after?: number,
): Promise<{ revision: number; ackAt: number; attempts: number; firstError?: string }> {
  let attempts = 0;
  let firstError: string | undefined;
  for (;;) {
    attempts++;
    try {
      const revision = after === undefined ? await commit(client, puts, deletes) : await guardedCommit(client, puts, deletes, after);
      return { revision, ackAt: Date.now(), attempts, firstError };
    } catch (err) {
      firstError ??= (err as Error).message;
      await sleep(retryMs);
    }
  }
}

async function guardedCommit(client: Etcd3, puts: [string, Buffer | string][], deletes: string[], after: number): Promise<number> {
  const [guardKey, ours] = puts[0]!;
  const ops = [...puts.map(([k, v]) => client.put(k).value(v)), ...deletes.map((k) => client.delete().key(k))];
  const res = await client.if(guardKey, 'Mod', '<', after + 1).then(...ops).commit();
  if (res.succeeded) return Number(res.header.revision);
  const now = await client.get(guardKey).exec();
  const kv = now.kvs[0];
  if (kv && kv.value.equals(Buffer.from(ours))) return Number(kv.mod_revision); // an earlier attempt landed
  throw new Error(`${guardKey} changed after revision ${after} by someone else`);
}

/**
 * Every value `key` held, in revision order, read from etcd's own history (a
 * watch from revision 1 up to `untilRevision`; the suites never compact).
 * What the cluster committed, independent of the daemon.
 */
export async function keyHistory(client: Etcd3, key: string, untilRevision: number): Promise<{ revision: number; value: Buffer }[]> {
  const out: { revision: number; value: Buffer }[] = [];
  const watcher = await client.watch().key(key).startRevision('1').create();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`history of ${key} did not reach revision ${untilRevision}`)), 15_000);
      const check = (rev: number) => rev >= untilRevision && (clearTimeout(timer), resolve());
      watcher.on('put', (kv) => {
        out.push({ revision: Number(kv.mod_revision), value: kv.value });
        check(Number(kv.mod_revision));
      });
      watcher.on('data', (res) => check(Number(res.header.revision)));
      watcher.on('error', reject);
    });
  } finally {
    await watcher.cancel();
  }
  return out.filter((h) => h.revision <= untilRevision);
}

// ---------------------------------------------------------------- values

const HEADER = /^v(\d+)\|([^|]*)\|(\d+)\|/;

/** `v<N>|<key>|<len>|` then a padding byte that depends on N, `len` bytes in all. */
export function faultValue(version: number, key: string, len = 512 + ((version * 7919) % 31) * 128): Buffer {
  const header = Buffer.from(`v${version}|${key}|${len}|`);
  const buf = Buffer.alloc(Math.max(len, header.length), 97 + (version % 26));
  header.copy(buf);
  return buf;
}

/** The version a complete, intact value for `key` holds, else undefined (partial, foreign, garbage). */
export function parseFaultValue(buf: Buffer, key: string): number | undefined {
  const m = HEADER.exec(buf.subarray(0, 400).toString('latin1'));
  if (!m || m[2] !== key) return undefined;
  const version = Number(m[1]);
  if (buf.length !== Math.max(Number(m[3]), m[0].length)) return undefined;
  const pad = 97 + (version % 26);
  for (let i = m[0].length; i < buf.length; i++) if (buf[i] !== pad) return undefined;
  return version;
}

// ---------------------------------------------------------------- sampler

export interface SampledObject {
  id: string;
  dir: string;
  keys: string[];
}

/**
 * What the reader saw of one object. A pass reads every key through `<dir>/<key>`;
 * it is judged only when `..data` resolved to the same target before and after
 * (timestamped dir names are never reused, so every open went through one payload).
 */
export interface ObjectVerdict {
  id: string;
  /** File reads that returned bytes. */
  reads: number;
  /** Judged passes. */
  passes: number;
  /** Judged passes where every key was present, intact, and of one version. */
  consistent: number;
  /** Passes where no key was readable and `..data` was absent or an empty payload. */
  absent: number;
  /** Judged passes where the present keys agreed but some `<key>` links did not exist yet (creation window). */
  linksPending: number;
  /** Passes during which `..data` moved (not judged as a whole; each file read still is). */
  straddled: number;
  /** Reads that returned bytes that are not one whole value: a partial or foreign file. */
  torn: number;
  /** Judged passes whose keys carried different versions. */
  mixed: number;
  /** Reads that returned a lower version than an earlier read of this object. */
  backwards: number;
  /** Passes where a key was readable although there was no `..data` at all. */
  orphanReads: number;
  /** Up to 10 descriptions of bad passes. */
  samples: string[];
  /** [epoch ms, version]: each time a read returned a version higher than any before. */
  firstSeen: [number, number][];
  /** [epoch ms, version, or -1 for absent]: each change of a judged pass's state. */
  states: [number, number][];
  maxVersion: number;
}

export interface Sampler {
  /** Passes over all objects so far. */
  passes(): number;
  stop(): Promise<ObjectVerdict[]>;
}

/** Start the reader thread; resolves once it is reading. `pauseMs` between rounds keeps a core for the daemon. */
export async function startSampler(objects: SampledObject[], opts: { pauseMs?: number } = {}): Promise<Sampler> {
  const shared = new SharedArrayBuffer(8);
  const counters = new Int32Array(shared);
  const worker = new Worker(new URL(import.meta.url), { workerData: { confsyncSampler: true, objects, shared, pauseMs: opts.pauseMs ?? 0.5 } });
  const result = new Promise<ObjectVerdict[]>((resolve, reject) => {
    worker.on('message', (m: { type: string; verdicts?: ObjectVerdict[] }) => m.type === 'done' && resolve(m.verdicts!));
    worker.once('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { type: string }) => m.type === 'ready' && resolve());
    worker.once('error', reject);
  });
  return {
    passes: () => Atomics.load(counters, 1),
    async stop() {
      Atomics.store(counters, 0, 1);
      Atomics.notify(counters, 0);
      const verdicts = await result;
      await worker.terminate();
      return verdicts;
    },
  };
}

function readlinkOr(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

function samplePass(o: SampledObject, r: ObjectVerdict): void {
  const bad = (what: string) => r.samples.length < 10 && r.samples.push(`${new Date().toISOString()} ${o.id}: ${what}`);
  const before = readlinkOr(path.join(o.dir, '..data'));
  const seen: (number | string)[] = [];
  for (const key of o.keys) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(path.join(o.dir, key));
    } catch (err) {
      seen.push((err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : `error:${(err as NodeJS.ErrnoException).code}`);
      continue;
    }
    r.reads++;
    const version = parseFaultValue(buf, key);
    if (version === undefined) {
      r.torn++;
      bad(`key ${key}: ${buf.length} bytes that are not one whole value (${JSON.stringify(buf.subarray(0, 40).toString('latin1'))})`);
      seen.push('torn');
      continue;
    }
    if (version < r.maxVersion) {
      r.backwards++;
      bad(`key ${key}: read v${version} after v${r.maxVersion}`);
    } else if (version > r.maxVersion) {
      r.maxVersion = version;
      r.firstSeen.push([Date.now(), version]);
    }
    seen.push(version);
  }
  const after = readlinkOr(path.join(o.dir, '..data'));
  const versions = new Set(seen.filter((s): s is number => typeof s === 'number'));
  const missing = seen.filter((s) => s === 'missing').length;
  const state = (s: number) => {
    const last = r.states[r.states.length - 1];
    if (!last || last[1] !== s) r.states.push([Date.now(), s]);
  };
  if (before === undefined && after === undefined) {
    if (missing === o.keys.length) {
      r.absent++;
      state(-1);
    } else if (versions.size > 0) {
      r.orphanReads++;
      bad(`keys readable without ..data: ${seen.join(',')}`);
    }
    return;
  }
  if (before !== after) {
    r.straddled++;
    return;
  }
  r.passes++;
  if (versions.size > 1) {
    r.mixed++;
    bad(`one payload (${before}) but versions ${seen.join(',')}`);
    return;
  }
  if (seen.some((s) => typeof s === 'string' && s !== 'missing')) return; // torn (counted) or an odd errno
  if (missing === o.keys.length) {
    r.absent++; // an emptied payload: removal in progress
    state(-1);
    return;
  }
  if (missing > 0) {
    r.linksPending++;
    return;
  }
  r.consistent++;
  state([...versions][0]!);
}

if (!isMainThread && parentPort && (workerData as { confsyncSampler?: boolean })?.confsyncSampler) {
  const { objects, shared, pauseMs } = workerData as { objects: SampledObject[]; shared: SharedArrayBuffer; pauseMs: number };
  const counters = new Int32Array(shared);
  const verdicts: ObjectVerdict[] = objects.map((o) => ({
    id: o.id, reads: 0, passes: 0, consistent: 0, absent: 0, linksPending: 0, straddled: 0, torn: 0, mixed: 0,
    backwards: 0, orphanReads: 0, samples: [], firstSeen: [], states: [], maxVersion: -1,
  }));
  parentPort.postMessage({ type: 'ready' });
  while (Atomics.load(counters, 0) === 0) {
    for (let i = 0; i < objects.length; i++) samplePass(objects[i]!, verdicts[i]!);
    Atomics.add(counters, 1, 1);
    if (pauseMs > 0) Atomics.wait(counters, 0, 0, pauseMs);
  }
  parentPort.postMessage({ type: 'done', verdicts });
}

// ---------------------------------------------------------------- small helpers

/** Every path below `dir` (links not followed). */
export function walk(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

/** The daemon's pino lines (JSON), skipping anything that is not JSON. */
export function logLines(log: string): Record<string, any>[] {
  const out: Record<string, any>[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line cut by SIGKILL
    }
  }
  return out;
}

/** p-th percentile (0..1) of numbers. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}
