/**
 * Cold start: a daemon starting against a full keyspace.
 *
 *   node dist/bench/run.js --only cold-start   (10,000 objects × 10 keys + 10,000 secrets; --quick: 1,000 + 1,000)
 *   node dist/bench/cold-start.js --objects 10000
 *
 * The keyspace: `objects` ConfigMap objects of 10 keys (64-byte values) and
 * `objects` Secret objects of one key each, sealed to the daemon's identity with
 * the envelope module, all global, spread over 10 namespaces; put 64 in flight.
 * Then `confsync run` is spawned and timed from the outside: its log lines
 * ("confsync started", "listed etcd"), GET /readyz every 20 ms until 200, and a
 * sweep that checks every expected file's bytes (an object counts once its
 * `..data` exists and all its keys read right; passes 250 ms apart, so "all files"
 * is late by at most one pass). Peak RSS is VmHWM from /proc at the end.
 * Then, on the same daemon: idle CPU, CPU per put with everything loaded, and a
 * restart on the same files (bench/loaded.ts).
 * Secrets go to /dev/shm (tmpfs), as the daemon wants; config files to os.tmpdir().
 * Baseline in the same run: this process listing the same keys from etcd.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { startEtcd } from '../test/harness/etcd.js';
import { DaemonProcess } from '../test/harness/daemon.js';
import { freePort } from '../test/harness/ports.js';
import { flag, fsType, grid, isMain, pidOf, pool, procUsage, type ScenarioOptions } from './put-to-file.js';
import { loadedPhases, writes } from './loaded.js';

const KEYS = 10;
const NAMESPACES = 10;

interface Expected {
  dir: string;
  files: [string, Buffer][];
}

export async function coldStart(opts: ScenarioOptions & { objects?: number }): Promise<string> {
  const objects = opts.objects ?? (opts.quick ? 1_000 : 10_000);
  const secrets = objects;
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint, grpcOptions: { 'grpc.max_receive_message_length': -1 } });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-cold-'));
  const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const secretsRoot = fs.mkdtempSync(path.join(shm, 'confsync-cold-secrets-'));
  let d: DaemonProcess | undefined;
  let floorSecrets: string | undefined;
  try {
    // --- the keyspace
    const identity = generateIdentity();
    const identityFile = path.join(work, 'identity.key');
    await writeIdentityFile(identityFile, identity);
    const recipient = recipientOf(identity.publicKey);
    const puts: [string, Buffer | string][] = [];
    const configItems: { ns: string; name: string; keys: [string, Buffer][] }[] = [];
    for (let o = 0; o < objects; o++) {
      const ns = `ns-${o % NAMESPACES}`;
      const name = `app-${o}`;
      const keys: [string, Buffer][] = [];
      for (let k = 0; k < KEYS; k++) {
        const value = Buffer.from(`${name}/k${k}=`.padEnd(64, 'x'));
        keys.push([`k${k}`, value]);
        puts.push([`/confsync/global/configmaps/${ns}/${name}/k${k}`, value]);
      }
      configItems.push({ ns, name, keys });
    }
    const ts = performance.now();
    const secretItems: { ns: string; name: string; plain: Buffer }[] = [];
    for (let s = 0; s < secrets; s++) {
      const ns = `ns-${s % NAMESPACES}`;
      const name = `db-${s}`;
      const plain = Buffer.from(`password-${s}-`.padEnd(32, 'p'));
      const logical = `global/secrets/${ns}/${name}/password`;
      puts.push([`/confsync/${logical}`, await seal(plain, logical, [recipient])]);
      secretItems.push({ ns, name, plain });
    }
    const sealMs = performance.now() - ts;
    const tp = performance.now();
    await pool(puts, 64, async ([key, value]) => void (await client.put(key).value(value)));
    const putMs = performance.now() - tp;

    // --- baseline: the same keys listed by this process
    const tl = performance.now();
    const listed = await client.getAll().prefix('/confsync/global/').keys();
    const listMs = performance.now() - tl;
    if (listed.length !== puts.length) throw new Error(`listed ${listed.length} keys, put ${puts.length}`);

    // --- the daemon
    const port = await freePort();
    d = new DaemonProcess({
      cluster: 'bench',
      identity: identityFile,
      etcd: { endpoints: [etcd.endpoint] },
      sinks: { files: { secretsRoot } },
      metrics: { listen: `127.0.0.1:${port}` },
      log: { level: 'info' },
    });
    const expected: Expected[] = [
      ...configItems.map((c) => ({ dir: path.join(d!.root, 'configmaps', c.ns, c.name), files: c.keys })),
      ...secretItems.map((s) => ({ dir: path.join(secretsRoot, s.ns, s.name), files: [['password', s.plain]] as [string, Buffer][] })),
    ];
    const daemon = d;
    const t0 = performance.now();
    daemon.start();
    const marks: Record<string, number> = {};
    const deadline = Date.now() + (opts.quick ? 120_000 : 900_000);
    const probe = (async () => {
      while (!marks.readyz && Date.now() < deadline) {
        if (!marks.started && daemon.log.includes('"msg":"confsync started"')) marks.started = performance.now() - t0;
        if (!marks.listed && daemon.log.includes('listed etcd')) marks.listed = performance.now() - t0;
        if ((await readyz(port)) === 200) marks.readyz = performance.now() - t0;
        if (!daemon.running) throw new Error(`daemon exited: ${daemon.log.slice(-2000)}`);
        await sleep(20);
      }
    })();
    const sweep = (async () => {
      let pending = expected;
      while (pending.length > 0 && Date.now() < deadline) {
        pending = pending.filter((e) => !matches(e));
        if (pending.length === 0) marks.files = performance.now() - t0;
        else await sleep(250);
        if (!daemon.running) throw new Error(`daemon exited: ${daemon.log.slice(-2000)}`);
      }
      if (pending.length > 0) throw new Error(`${pending.length} objects still missing or wrong at the deadline, e.g. ${pending[0]!.dir}`);
    })();
    await Promise.all([probe, sweep]);
    const usage = procUsage(pidOf(daemon));
    const warned = daemon.log.includes('persistent filesystem');
    const written = (await writes(port)) ?? 0;
    const first = configItems[0]!;
    const loaded = await loadedPhases({
      client,
      daemon,
      port,
      target: { key: `/confsync/global/configmaps/${first.ns}/${first.name}/k0`, file: path.join(daemon.root, 'configmaps', first.ns, first.name, 'k0') },
      settleSeconds: opts.quick ? 5 : 15,
      idleSeconds: opts.quick ? 10 : 60,
      puts: opts.quick ? 50 : 200,
    });
    d = loaded.daemon;
    // The file systems' own floor, same run: the same dirs, files and links by a plain
    // loop of synchronous calls, no fsync, no reads (made after the daemon's phases,
    // into fresh dirs on the same file systems, and left there until the end: removing
    // them first would slow the daemon's inode allocation, as a run before does).
    floorSecrets = fs.mkdtempSync(path.join(shm, 'confsync-cold-floor-'));
    const floorMs = writeFloor(path.join(work, 'floor'), floorSecrets, configItems, secretItems);

    const total = objects * KEYS + secrets;
    const s = (n: number | undefined) => (n === undefined ? 'n/a' : (n / 1000).toFixed(2));
    return [
      `${objects.toLocaleString('en')} ConfigMap objects × ${KEYS} keys (64 B values) + ${secrets.toLocaleString('en')} Secret objects × 1 key sealed to the daemon; global scope, ${NAMESPACES} namespaces; ${puts.length.toLocaleString('en')} keys in etcd`,
      `load: sealed ${secrets.toLocaleString('en')} envelopes in ${(sealMs / 1000).toFixed(2)} s (${((sealMs * 1000) / secrets).toFixed(0)} µs each); put ${puts.length.toLocaleString('en')} keys 64 in flight in ${(putMs / 1000).toFixed(1)} s (${Math.round(puts.length / (putMs / 1000)).toLocaleString('en')}/s)`,
      `config files under ${os.tmpdir()} (${fsType(os.tmpdir())}), secrets under ${shm} (${fsType(shm)})${warned ? ' — the daemon warned that it is persistent' : ''}`,
      grid([
        ['cold start', 'seconds', '÷ raw list'],
        [`raw etcd list of the ${puts.length.toLocaleString('en')} keys by the bench (baseline)`, s(listMs), '1.0×'],
        ['spawn → log "confsync started"', s(marks.started), ''],
        ['spawn → log "listed etcd" (snapshot in memory)', s(marks.listed), marks.listed ? `${(marks.listed / listMs).toFixed(1)}×` : ''],
        ['spawn → GET /readyz 200', s(marks.readyz), marks.readyz ? `${(marks.readyz / listMs).toFixed(1)}×` : ''],
        [`spawn → all ${total.toLocaleString('en')} files on disk with the right bytes`, s(marks.files), marks.files ? `${(marks.files / listMs).toFixed(1)}×` : ''],
        ['floor: the same dirs, files and links by a synchronous loop, no fsync (measured after the daemon, same file systems)', s(floorMs), ''],
      ]),
      grid([
        ['daemon process', 'value'],
        ['peak RSS (VmHWM) at ready, all files there', `${usage.peakMiB.toFixed(0)} MiB`],
        ['CPU (user + system) until ready and all files were there', `${usage.cpuSeconds.toFixed(1)} s`],
        ['objects written (confsync_writes_total{sink="files"})', `${written.toLocaleString('en')} (of ${(objects + secrets).toLocaleString('en')})`],
      ]),
      loaded.text,
    ].join('\n');
  } finally {
    client.close();
    await d?.cleanup();
    await etcd.stop();
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(secretsRoot, { recursive: true, force: true });
    if (floorSecrets) fs.rmSync(floorSecrets, { recursive: true, force: true });
  }
}

/** An object is there once `..data` exists and every key reads the expected bytes. */
function matches(e: Expected): boolean {
  // throwIfNoEntry: a pass over 20,000 missing objects must not build 20,000 exceptions
  // (that alone took a third of a core away from the daemon).
  if (!fs.lstatSync(path.join(e.dir, '..data'), { throwIfNoEntry: false })) return false;
  try {
    return e.files.every(([key, want]) => fs.readFileSync(path.join(e.dir, key)).equals(want));
  } catch {
    return false;
  }
}

/**
 * What the kubelet-style layout costs the file system alone: per object its dir, a
 * payload dir, each file (create, write, close), a link per key and `..data`. ms.
 */
function writeFloor(configRoot: string, secretsRoot: string, configItems: { ns: string; name: string; keys: [string, Buffer][] }[], secretItems: { ns: string; name: string; plain: Buffer }[]): number {
  const t0 = performance.now();
  const one = (dir: string, files: [string, Buffer][]) => {
    fs.mkdirSync(dir, { recursive: true });
    const payload = path.join(dir, '..payload');
    fs.mkdirSync(payload);
    for (const [k, v] of files) {
      fs.writeFileSync(path.join(payload, k), v, { flag: 'wx' });
      fs.symlinkSync(`..data/${k}`, path.join(dir, k));
    }
    fs.symlinkSync('..payload', path.join(dir, '..data'));
  };
  for (const c of configItems) one(path.join(configRoot, c.ns, c.name), c.keys);
  for (const x of secretItems) one(path.join(secretsRoot, x.ns, x.name), [['password', x.plain]]);
  return performance.now() - t0;
}

function readyz(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/readyz', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(await coldStart({ quick: args.includes('--quick'), objects: Number(flag(args, '--objects')) || undefined }));
  process.exit(0);
}
