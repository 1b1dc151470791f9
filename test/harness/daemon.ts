import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';

/** The built CLI (tests run from dist/test/…). */
export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

export async function until<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The daemon as a child process (pino's habit: test exit behaviour by forking).
 * Its config lives in a temp dir; its log lines are kept for grepping.
 */
export class DaemonProcess {
  readonly dir: string;
  readonly root: string;
  readonly configFile: string;
  log = '';
  private proc?: ChildProcess;
  private exited?: Promise<number | null>;

  constructor(config: Record<string, unknown>, dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-d-'))) {
    this.dir = dir;
    this.root = path.join(dir, 'out');
    this.configFile = path.join(dir, 'config.yaml');
    const files = { root: this.root, ...((config.sinks as any)?.files ?? {}) };
    fs.writeFileSync(this.configFile, stringify({ node: 'n1', log: { level: 'debug' }, stateDir: path.join(dir, 'state'), ...config, sinks: { ...((config.sinks as object) ?? {}), files } }));
  }

  start(): this {
    // CONFSYNC_DAEMON_NODE_ARGS: Node flags for the daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
    // to profile a bench's daemon (Node refuses --cpu-prof in NODE_OPTIONS).
    const nodeArgs = (process.env.CONFSYNC_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean);
    this.proc = spawn(process.execPath, [...nodeArgs, MAIN, 'run', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    // CONFSYNC_DAEMON_LOG_COPY: also append the daemon's output to this file (a bench's daemon log, with --trace-gc lines).
    const copy = process.env.CONFSYNC_DAEMON_LOG_COPY ? fs.createWriteStream(process.env.CONFSYNC_DAEMON_LOG_COPY, { flags: 'a' }) : undefined;
    this.proc.stdout!.on('data', (d) => ((this.log += d), copy?.write(d)));
    this.proc.stderr!.on('data', (d) => ((this.log += d), copy?.write(d)));
    const p = this.proc;
    this.exited = new Promise((r) => p.once('exit', (code) => r(code)));
    return this;
  }

  async ready(): Promise<void> {
    // A restart with a local snapshot resumes the watch instead of listing.
    await until(() => this.log.includes('"msg":"confsync started"') && (this.log.includes('listed etcd') || this.log.includes('caught up from the local snapshot')), 'daemon start');
  }

  /** Path of a projected file. */
  file(kind: 'configmaps' | 'secrets', ns: string, name: string, key?: string): string {
    return path.join(this.root, kind, ns, name, ...(key ? [key] : []));
  }

  /** A signal that does not end the process (SIGSTOP, SIGCONT): nothing to wait for. */
  send(sig: NodeJS.Signals): void {
    this.proc?.kill(sig);
  }

  async signal(sig: NodeJS.Signals): Promise<number | null> {
    this.proc?.kill(sig);
    return this.exited!;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async cleanup(): Promise<void> {
    // A profiled daemon writes its profile on a clean exit: ask first (5 s), then kill.
    if (this.running && process.env.CONFSYNC_DAEMON_NODE_ARGS) await Promise.race([this.signal('SIGTERM'), new Promise((r) => setTimeout(r, 5000))]);
    if (this.running) await this.signal('SIGKILL');
    // Fault loops (scripts/loop-test.sh) keep every daemon's log for a failed run's post-mortem.
    const keep = process.env.CONFSYNC_KEEP_DAEMON_LOGS;
    if (keep) {
      fs.mkdirSync(keep, { recursive: true });
      fs.writeFileSync(path.join(keep, `daemon-${Date.now()}-${path.basename(this.dir)}.log`), this.log);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
