import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import type { ObjectId } from '../keyspace.js';
import { matchesGlob } from '../glob.js';
import type { Logger } from '../log.js';
import type { ReconcileEvent } from '../reconcile/events.js';

type HookConfig = Config['hooks'][number];

/** Bytes of stdout/stderr kept per run: enough to explain a failure, bounded for a chatty hook. */
const CAPTURE_BYTES = 4096;
/** Grace between SIGTERM and SIGKILL for a hook that ran past its timeout. */
const KILL_GRACE_MS = 5000;
/** A steady stream of changes must not postpone a reload forever: a run happens at the latest this many windows after the first pending change. */
const MAX_WAIT_WINDOWS = 10;

interface HookState {
  readonly index: number;
  readonly cfg: HookConfig;
  /** Ids changed since the last run started; handed to the next run. */
  pending: Set<ObjectId>;
  firstPendingAt: number;
  timer?: NodeJS.Timeout;
  /** Set while a run is in flight: at most one run per hook at a time. */
  running?: Promise<void>;
}

export interface Outcome {
  ok: boolean;
  fields: Record<string, unknown>;
}

/**
 * Runs the configured reload hooks after an object's files were swapped (SPEC §6).
 *
 *  (1) `written`/`removed` events of the files sink add the object id to the pending
 *      set of every hook whose globs match it, and (re)start that hook's
 *      debounce timer — unless the hook is running;
 *  (2) when the timer fires the pending set is taken whole and the hook runs
 *      once with it (`CONFSYNC_OBJECTS`);
 *  (3) when a run ends and changes arrived meanwhile, (1) is resumed for them:
 *      never two runs of one hook at once, never a change without a run after it.
 *
 * Observer methods only record and return; runs are async and never block the
 * sync. A failing hook is logged and counted, nothing more.
 */
export class Hooks {
  /** Per hook index, for metrics. `runs` counts attempts; `failures` is a subset. */
  readonly counters: { readonly runs: number[]; readonly failures: number[] };
  private readonly hooks: HookState[];
  private closed = false;

  constructor(hooks: Config['hooks'], private readonly logger: Logger) {
    this.hooks = hooks.map((cfg, index) => ({ index, cfg, pending: new Set(), firstPendingAt: 0 }));
    this.counters = { runs: hooks.map(() => 0), failures: hooks.map(() => 0) };
  }

  /** A reconcile observer: hooks follow what the files sink swapped or removed. */
  readonly observe = (e: ReconcileEvent): void => {
    if (e.type === 'written' && e.sink === 'files') this.changed(e.object.id);
    else if (e.type === 'removed' && e.sink === 'files') this.changed(e.id);
  };

  /** Drops pending runs; waits for running ones, which their own timeout bounds. */
  async close(): Promise<void> {
    this.closed = true;
    for (const h of this.hooks) {
      clearTimeout(h.timer);
      h.pending.clear();
    }
    await Promise.all(this.hooks.map((h) => h.running));
  }

  /** (1) */
  private changed(id: ObjectId): void {
    if (this.closed) return;
    for (const h of this.hooks) {
      if (!h.cfg.objects.some((glob) => matchesGlob(id, glob))) continue;
      if (h.pending.size === 0) h.firstPendingAt = Date.now();
      h.pending.add(id);
      if (!h.running) this.schedule(h);
    }
  }

  private schedule(h: HookState): void {
    clearTimeout(h.timer);
    const latest = h.firstPendingAt + MAX_WAIT_WINDOWS * h.cfg.debounceMs;
    const delay = Math.max(0, Math.min(h.cfg.debounceMs, latest - Date.now()));
    h.timer = setTimeout(() => this.start(h), delay);
  }

  /** (2), (3) */
  private start(h: HookState): void {
    h.timer = undefined;
    if (this.closed || h.running || h.pending.size === 0) return;
    const ids = [...h.pending].sort();
    h.pending = new Set();
    this.counters.runs[h.index]!++;
    h.running = this.run(h, ids).then(({ ok, fields }) => {
      const base = { hook: h.index, objects: ids.length > 5 ? `${ids.slice(0, 5).join(' ')} …(+${ids.length - 5})` : ids.join(' '), ...fields };
      if (ok) this.logger.debug(base, 'hook ran');
      else {
        this.counters.failures[h.index]!++;
        this.logger.warn(base, 'hook failed; files are in place, the reload did not happen');
      }
      h.running = undefined;
      if (h.pending.size > 0 && !this.closed) this.schedule(h);
    });
  }

  private run(h: HookState, ids: ObjectId[]): Promise<Outcome> {
    if (h.cfg.command) return runCommand(h.cfg.command, { CONFSYNC_OBJECTS: ids.join(' ') }, h.cfg.timeoutSeconds * 1000);
    return sendSignal(h.cfg.signal!.pidFile, h.cfg.signal!.name);
  }
}

/**
 * Never rejects: every way a command can fail becomes `ok: false` with what an operator
 * needs to know. `env` is added to the daemon's environment. Templates' check and reload
 * (render/) run through here too.
 */
export function runCommand(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const out = { stdout: '', stderr: '' };
    let timedOut = false;
    // No shell: argv is passed as is. Its own process group (detached) so a timeout
    // kills what it started too — `sh -c '…; sleep 10'` forks sleep, which would
    // otherwise outlive the kill and hold the pipes open.
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      detached: true,
    });
    for (const name of ['stdout', 'stderr'] as const) {
      child[name].setEncoding('utf8');
      child[name].on('data', (d: string) => {
        if (out[name].length < CAPTURE_BYTES) out[name] += d.slice(0, CAPTURE_BYTES - out[name].length);
      });
    }
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
    }, timeoutMs);

    let settled = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      // 'exit' can precede the last output; a daemonized grandchild may keep the pipes
      // open forever. Give output a moment, then let go of the pipes either way.
      let reported = false;
      const done = () => {
        if (reported) return;
        reported = true;
        child.stdout.destroy();
        child.stderr.destroy();
        const ok = !err && !timedOut && code === 0;
        const fields: Record<string, unknown> = { command: argv[0], code, signal };
        if (err) fields.err = err.message;
        if (timedOut) fields.timedOutAfterSeconds = timeoutMs / 1000;
        if (ok) Object.assign(fields, out);
        else fields.stderr = out.stderr.trim().slice(-512);
        resolve({ ok, fields });
      };
      if (err) return done();
      const grace = setTimeout(done, 100);
      child.once('close', () => (clearTimeout(grace), done()));
    };
    child.once('error', (err) => finish(null, null, err)); // ENOENT, EACCES: no process was started
    child.once('exit', (code, signal) => finish(code, signal));
  });
}

export async function sendSignal(pidFile: string, name: string): Promise<Outcome> {
  const fields: Record<string, unknown> = { pidFile, signal: name };
  try {
    const text = (await readFile(pidFile, 'utf8')).trim();
    // Only a positive pid: 0 or -1 would signal our own process group or every process we may signal.
    if (!/^[1-9]\d*$/.test(text)) return { ok: false, fields: { ...fields, err: `pid file does not hold a positive integer: ${JSON.stringify(text.slice(0, 40))}` } };
    fields.pid = Number(text);
    process.kill(fields.pid as number, name);
    return { ok: true, fields };
  } catch (err) {
    return { ok: false, fields: { ...fields, err: (err as Error).message } };
  }
}
