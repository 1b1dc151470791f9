import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

/**
 * A real etcd for tests: own data dir (0700), own loopback ports, fast election
 * flags (DEPENDENCIES.md). `kill` + `start` restart it on the same ports and data,
 * which is how tests inject outages.
 */
export interface EtcdHandle {
  endpoint: string;
  dataDir: string;
  start(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
  /** Run etcdctl against this etcd; returns stdout; throws with stderr on failure. */
  ctl(...args: string[]): string;
  /** etcd's current revision. */
  revision(): number;
  /** The running etcd's pid (benches read its CPU from /proc). */
  pid(): number | undefined;
}

/**
 * The etcd binaries the tests run: Debian's 3.4 from PATH, or the ones named by
 * CONFSYNC_ETCD_BIN / CONFSYNC_ETCDCTL_BIN (`npm run test:etcd36` points them at the
 * etcd 3.6 that scripts/etcd.sh builds).
 */
export function etcdBinaries(): { etcd: string; etcdctl: string } {
  return {
    etcd: process.env.CONFSYNC_ETCD_BIN || which('etcd'),
    etcdctl: process.env.CONFSYNC_ETCDCTL_BIN || which('etcdctl'),
  };
}

export async function startEtcd(): Promise<EtcdHandle> {
  const { etcd: etcdBin, etcdctl } = etcdBinaries();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-etcd-'));
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  const [client, peer] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${client}`;
  let proc: ChildProcess | undefined;

  const args = [
    '--name', 't', '--data-dir', dataDir,
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `t=http://127.0.0.1:${peer}`, '--initial-cluster-state', 'new',
    '--heartbeat-interval=10', '--election-timeout=100', '--logger', 'zap', '--log-level', 'error',
  ];

  const ctl = (...a: string[]) => {
    const r = spawnSync(etcdctl, ['--endpoints', endpoint, ...a], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
    if (r.status !== 0) throw new Error(`etcdctl ${a.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };

  const handle: EtcdHandle = {
    endpoint,
    dataDir,
    async start() {
      proc = spawn(etcdBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr!.on('data', (d) => (stderr += d));
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        if (proc.exitCode !== null) throw new Error(`etcd exited ${proc.exitCode}: ${stderr}`);
        const r = spawnSync(etcdctl, ['--endpoints', endpoint, '--command-timeout=1s', 'endpoint', 'health'], { encoding: 'utf8' });
        if (r.status === 0) return;
        await sleep(50);
      }
      throw new Error(`etcd did not become healthy on ${endpoint}: ${stderr}`);
    },
    async kill(signal = 'SIGKILL') {
      const p = proc;
      // A process killed by a signal keeps exitCode null: check signalCode too.
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      await exited;
    },
    async stop() {
      await handle.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
    ctl,
    revision() {
      const out = JSON.parse(ctl('endpoint', 'status', '-w', 'json'));
      return Number(out[0].Status.header.revision);
    },
    pid: () => proc?.pid,
  };
  await handle.start();
  return handle;
}

function which(bin: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${bin} not found on PATH: install it with "apt-get install -y etcd-server etcd-client"`);
  return r.stdout.trim();
}

/** `etcd grpc-proxy start` in front of `endpoints` (etcd's own proxy; it coalesces identical watches). */
export async function startGrpcProxy(endpoints: string[]): Promise<{ endpoint: string; pid: number; stop(): Promise<void> }> {
  const { etcd: etcdBin, etcdctl } = etcdBinaries();
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const hostPorts = endpoints.map((e) => new URL(e).host).join(',');
  const proc = spawn(etcdBin, ['grpc-proxy', 'start', '--endpoints', hostPorts, '--listen-addr', `127.0.0.1:${port}`, '--advertise-client-url', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  let stopping = false;
  // A proxy that dies under the test is the finding: say why.
  proc.once('exit', (code, sig) => stopping || process.stderr.write(`etcd grpc-proxy exited (${code ?? sig}): ${stderr.slice(-3000)}\n`));
  const stop = async () => {
    stopping = true;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`etcd grpc-proxy exited ${proc.exitCode}: ${stderr}`);
    const r = spawnSync(etcdctl, ['--endpoints', endpoint, '--command-timeout=1s', 'get', 'probe'], { encoding: 'utf8' });
    if (r.status === 0) return { endpoint, pid: proc.pid!, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`etcd grpc-proxy did not answer on ${endpoint}: ${stderr}`);
    }
    await sleep(50);
  }
}
