import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { loadConfigFile } from '../config/load.js';
import { startDaemon } from '../daemon.js';
import { UserError } from '../errors.js';
import { createLogger } from '../log.js';
import { intArg, untilSignal } from './common.js';
import { Etcd3 } from 'etcd3';
import { generateIdentity, loadKeyring, writeIdentityFile } from '../envelope/identity.js';
import { RecipientsFile } from '../envelope/recipients-file.js';
import { Keyspace } from '../keyspace.js';

const INSTALL_HINT = 'etcd was not found on PATH. Install it (Debian/Ubuntu: sudo apt-get install -y etcd-server etcd-client), or run ./scripts/setup.sh';

/**
 * `confsync dev`: the embedded default. A local etcd with its data under
 * ./.confsync/etcd, the daemon with files under ./.confsync/out, and a printed
 * cheat-sheet of etcdctl commands. Ctrl-C stops both.
 */
export function registerDev(program: Command): void {
  program
    .command('dev')
    .description('embedded default: local etcd + daemon + files under ./.confsync')
    .option('--dir <dir>', 'state directory', '.confsync')
    .option('--port <port>', 'etcd client port (default 2379, or a free one when taken)', intArg(1, 65535, 'a TCP port'))
    .action(async (flags: { dir: string; port?: number }) => {
      const dir = path.resolve(flags.dir);
      fs.mkdirSync(path.join(dir, 'etcd'), { recursive: true, mode: 0o700 });
      fs.chmodSync(path.join(dir, 'etcd'), 0o700);
      const etcdBin = which('etcd');
      if (!etcdBin) throw new UserError(INSTALL_HINT);
      const unlock = lockDir(dir);
      try {
        await runDev(dir, etcdBin, flags.port);
      } finally {
        unlock();
      }
      process.exit(process.exitCode ?? 0);
    });
}

async function runDev(dir: string, etcdBin: string, port: number | undefined): Promise<void> {
  const clientPort = port ?? ((await isFree(2379)) ? 2379 : await freePort());
  const peerPort = clientPort < 65535 && (await isFree(clientPort + 1)) ? clientPort + 1 : await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const etcd = new DevEtcd(etcdBin, path.join(dir, 'etcd'), clientPort, peerPort);
  try {
    await etcd.start(endpoint);
    const configFile = path.join(dir, 'config.yaml');
    fs.writeFileSync(
      configFile,
      `# Written by "confsync dev"; see config.example.yaml for every field.\n${stringify({
        cluster: 'dev',
        node: 'dev',
        etcd: { endpoints: [endpoint], prefix: '/confsync' },
        identity: path.join(dir, 'identity.key'),
        sinks: { files: { root: path.join(dir, 'out') } },
        stateDir: path.join(dir, 'state'),
        log: { level: 'info' },
      })}`,
    );
    const cfg = loadConfigFile(configFile);
    const out = path.join(dir, 'out');
    const recipient = await devIdentity(dir, endpoint);
    // One line for a second terminal: the CLI's secret and config verbs read these.
    const exportLine = `export CONFSYNC_ENDPOINTS=${shellQuote(endpoint)} CONFSYNC_RECIPIENTS=${shellQuote(path.join(dir, 'recipients.yaml'))} CONFSYNC_IDENTITY=${shellQuote(path.join(dir, 'identity.key'))}`;
    fs.writeFileSync(path.join(dir, 'env'), `${exportLine}\n`, { mode: 0o600 });
    process.stderr.write(
      [
        '',
        `confsync dev: etcd on ${endpoint} (data in ${path.join(dir, 'etcd')}), files under ${out}`,
        `  config:  ${configFile}`,
        '  in another terminal, first (or: source ' + shellQuote(path.join(dir, 'env')) + '):',
        '',
        `${exportLine}`,
        '',
        '  then try:',
        `    etcdctl --endpoints ${endpoint} put /confsync/global/configmaps/default/app/greeting hello`,
        `    cat ${out}/configmaps/default/app/greeting`,
        `    etcdctl --endpoints ${endpoint} put /confsync/clusters/dev/configmaps/default/app/greeting 'hello, dev'`,
        `    etcdctl --endpoints ${endpoint} del /confsync/clusters/dev/configmaps/default/app/greeting`,
        '    npx confsync config ls',
        '  secrets (sealed to this dev cluster, opened by the daemon, written 0400):',
        '    printf s3cret | npx confsync secret set default/db/password',
        '    npx confsync secret get default/db/password',
        `    cat ${out}/secrets/default/db/password`,
        `  or by hand: printf s3cret | npx confsync seal --recipient ${recipient} --path global/secrets/default/db/password \\`,
        `      | etcdctl --endpoints ${endpoint} put /confsync/global/secrets/default/db/password`,
        `  dev keeps its secrets in plain files under ${out}/secrets (a real node puts them on tmpfs).`,
        '  Ctrl-C stops the daemon and etcd.',
        '',
      ].join('\n') + '\n',
    );
    const daemon = await startDaemon(cfg, createLogger(cfg.log.level, undefined, cfg.log.format), { secretsOnDiskOk: true });
    const why = await Promise.race([untilSignal().then(() => undefined), etcd.gaveUp]);
    if (why) {
      process.stderr.write(`confsync dev: ${why}; stopping the daemon\n`);
      process.exitCode = 1;
    }
    await daemon.stop();
  } finally {
    await etcd.stop();
  }
}

/**
 * One `confsync dev` per directory: two would run two etcds on one data dir and
 * two daemons on one files root. The lock file holds the owner's pid; one left
 * by a process that is gone (kill -9, a crash) is taken over.
 */
function lockDir(dir: string): () => void {
  const file = path.join(dir, 'dev.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      const release = () => fs.rmSync(file, { force: true });
      process.once('exit', release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        throw new UserError(`another "confsync dev" (pid ${pid}) is already running on ${dir}; use that one, stop it (Ctrl-C in its terminal), or pass --dir for a second one`);
      }
      fs.rmSync(file, { force: true }); // stale: its owner is gone
    }
  }
  throw new UserError(`could not take the lock ${file}; is another "confsync dev" starting right now?`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A value as one shell word: single-quoted unless it is plainly safe. */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * dev's etcd, watched: if it exits while dev runs (killed, crashed) it is
 * started again on the same port and data, and the daemon reconnects as it
 * would to any etcd that came back. One that dies again within RESTART_WINDOW_MS
 * of a restart is not restarted: `gaveUp` resolves with why, and dev stops.
 */
const RESTART_WINDOW_MS = 10_000;

class DevEtcd {
  private proc?: ChildProcess;
  private stopping = false;
  /** Healthy once: only then is an exit a death to recover from (a failed first start is reported as such). */
  private up = false;
  private restarted = false;
  private startedAt = 0;
  private giveUp!: (why: string) => void;
  readonly gaveUp = new Promise<string>((r) => (this.giveUp = r));

  constructor(
    private readonly bin: string,
    private readonly dataDir: string,
    private readonly client: number,
    private readonly peer: number,
  ) {}

  async start(endpoint: string): Promise<void> {
    this.spawn();
    await waitHealthy(this.proc!, endpoint);
    this.up = true;
  }

  private spawn(): void {
    const proc = startEtcd(this.bin, this.dataDir, this.client, this.peer);
    this.proc = proc;
    this.startedAt = Date.now();
    proc.once('exit', (code, signal) => {
      if (this.stopping || !this.up || proc !== this.proc) return;
      const how = signal ? `was killed (${signal})` : `exited with code ${code}`;
      if (Date.now() - this.startedAt < RESTART_WINDOW_MS && this.restarted) {
        this.giveUp(`etcd ${how} again within ${RESTART_WINDOW_MS / 1000} s of a restart (see its messages above)`);
        return;
      }
      process.stderr.write(`confsync dev: etcd ${how}; starting it again on the same port and data\n`);
      this.restarted = true;
      this.spawn();
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
}

/**
 * The dev cluster's identity (created once, 0600), registered under
 * PREFIX/recipients/dev and pinned in ./.confsync/recipients.yaml so that
 * `confsync secret set` works out of the box. Returns the recipient string.
 */
async function devIdentity(dir: string, endpoint: string): Promise<string> {
  const file = path.join(dir, 'identity.key');
  if (!fs.existsSync(file)) await writeIdentityFile(file, generateIdentity());
  const recipient = (await loadKeyring(file)).recipients()[0]!;
  const pinned = await RecipientsFile.load(path.join(dir, 'recipients.yaml'), { missingOk: true });
  pinned.pin('dev', recipient);
  await pinned.save();
  const client = new Etcd3({ hosts: endpoint });
  try {
    await client.put(new Keyspace('/confsync').recipientKey('dev')).value(recipient.text);
  } finally {
    client.close();
  }
  return recipient.text;
}

function startEtcd(bin: string, dataDir: string, client: number, peer: number): ChildProcess {
  const c = `http://127.0.0.1:${client}`;
  const p = `http://127.0.0.1:${peer}`;
  const proc = spawn(
    bin,
    ['--name', 'dev', '--data-dir', dataDir, '--listen-client-urls', c, '--advertise-client-urls', c, '--listen-peer-urls', p,
      '--initial-advertise-peer-urls', p, '--initial-cluster', `dev=${p}`, '--heartbeat-interval=10', '--election-timeout=100',
      '--logger', 'zap', '--log-level', 'error'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return proc;
}

async function waitHealthy(proc: ChildProcess, endpoint: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new UserError(`etcd exited with code ${proc.exitCode} (see its messages above)`);
    const ok = await fetch(`${endpoint}/health`).then((r) => r.ok, () => false);
    if (ok) return;
    await sleep(100);
  }
  throw new UserError(`etcd did not become healthy on ${endpoint} within 15 s`);
}

function which(bin: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer().once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
