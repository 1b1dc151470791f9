/**
 * Bench-only launcher: several real daemons in one Node process (fan-out.ts).
 *
 *   node dist/bench/multi-daemon.js --log FILE [--level warn] CONFIG.yaml...
 *
 * Each config is loaded by the real loader and started with `startDaemon`, the
 * same function `confsync run` calls: every instance has its own etcd client,
 * list + watch, status lease, file root and drift watch. What they share is the
 * process: one V8 heap, one event loop, one copy of the loaded modules (about
 * 150 MB RSS per `confsync run` process on Node 20, most of it module code), so
 * 200 instances fit on a 2-core, 24 GiB machine.
 *
 * Prints "started <n>" on stdout once every daemon's loop runs; SIGTERM/SIGINT
 * stop them all and exit 0. Not part of the product: the CLI has no multi-daemon mode.
 */
import fs from 'node:fs';
import { loadConfigFile } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { flag } from './put-to-file.js';

const args = process.argv.slice(2);
const logFile = flag(args, '--log') ?? '/dev/null';
const level = flag(args, '--level') ?? 'warn';
const configs = args.filter((a, i) => !a.startsWith('--') && !['--log', '--level'].includes(args[i - 1] ?? ''));

const out = fs.createWriteStream(logFile, { flags: 'a' });
const daemons: Daemon[] = [];
let stopping = false;

async function stopAll(code: number): Promise<never> {
  stopping = true;
  await Promise.allSettled(daemons.map((d) => d.stop()));
  await new Promise((r) => out.end(r));
  process.exit(code);
}
process.once('SIGTERM', () => void stopAll(0));
process.once('SIGINT', () => void stopAll(0));

try {
  for (const file of configs) {
    if (stopping) break;
    const cfg = loadConfigFile(file);
    daemons.push(await startDaemon(cfg, createLogger(level, out).child({ node: cfg.node })));
  }
  process.stdout.write(`started ${daemons.length}\n`);
} catch (err) {
  process.stderr.write(`multi-daemon: ${(err as Error).message}\n`);
  await stopAll(1);
}
