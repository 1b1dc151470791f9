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
import { untilSignal } from './common.js';
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
    .option('--port <port>', 'etcd client port (default 2379, or a free one when taken)')
    .action(async (flags: { dir: string; port?: string }) => {
      const dir = path.resolve(flags.dir);
      fs.mkdirSync(path.join(dir, 'etcd'), { recursive: true, mode: 0o700 });
      fs.chmodSync(path.join(dir, 'etcd'), 0o700);
      const etcdBin = which('etcd');
      if (!etcdBin) throw new UserError(INSTALL_HINT);

      const clientPort = flags.port ? Number(flags.port) : (await isFree(2379)) ? 2379 : await freePort();
      const peerPort = (await isFree(clientPort + 1)) ? clientPort + 1 : await freePort();
      const endpoint = `http://127.0.0.1:${clientPort}`;
      const etcd = startEtcd(etcdBin, path.join(dir, 'etcd'), clientPort, peerPort);
      try {
        await waitHealthy(etcd, endpoint);
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
        const recipientsFile = path.join(dir, 'recipients.yaml');
        process.stderr.write(
          [
            '',
            `confsync dev: etcd on ${endpoint} (data in ${path.join(dir, 'etcd')}), files under ${out}`,
            `  config:  ${configFile}`,
            '  try, in another terminal:',
            `    etcdctl --endpoints ${endpoint} put /confsync/global/configmaps/default/app/greeting hello`,
            `    cat ${out}/configmaps/default/app/greeting`,
            `    etcdctl --endpoints ${endpoint} put /confsync/clusters/dev/configmaps/default/app/greeting 'hello, dev'`,
            `    etcdctl --endpoints ${endpoint} del /confsync/clusters/dev/configmaps/default/app/greeting`,
            `    npx confsync config ls --endpoints ${endpoint}`,
            '  secrets (sealed to this dev cluster, opened by the daemon, written 0400):',
            `    printf s3cret | npx confsync seal --recipient ${recipient} --path global/secrets/default/db/password \\`,
            `      | etcdctl --endpoints ${endpoint} put /confsync/global/secrets/default/db/password`,
            `    printf s3cret | CONFSYNC_RECIPIENTS=${recipientsFile} npx confsync secret set default/db/password --endpoints ${endpoint}`,
            `    cat ${out}/secrets/default/db/password`,
            '  Ctrl-C stops the daemon and etcd.',
            '',
          ].join('\n') + '\n',
        );
        const daemon = await startDaemon(cfg, createLogger(cfg.log.level, undefined, cfg.log.format));
        await untilSignal();
        await daemon.stop();
      } finally {
        etcd.kill('SIGTERM');
      }
      process.exit(0);
    });
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
