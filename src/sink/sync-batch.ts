/**
 * Group commit for a first full sync: many object dirs written at once share one
 * file-system-wide sync (syncfs(2), through coreutils' `sync -f DIR`) instead of
 * three fsyncs each. Node has no syncfs binding; one `sync -f` per batch, run by a
 * shell that stays for the batches that follow (SyncfsShell), is cheap next to
 * what it replaces: a cold start of 20,000 objects made ~60,000 fsyncs,
 * each a disk flush on a file system without a journal and a journal commit on
 * one with it.
 *
 * `sync()` resolves once a syncfs that STARTED AFTER the call has finished: then
 * everything the caller wrote before calling is on disk, as a per-file fsync
 * would have made it (syncfs writes back every dirty inode of the file system and
 * reports a write-back error since Linux 5.8). Calls that arrive while a sync runs
 * wait for the next one, which serves them all: batches form by themselves, no
 * timer to tune. One put on a quiet daemon does not come here (it fsyncs its own
 * files: a file-system-wide sync per put would cost more than its fsyncs).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SyncBatch {
  private waiting: Waiter[] = [];
  private running = false;
  private scheduled = false;
  /** Set when `sync -f` cannot run here (no `sh` or `sync`, a `sync` without -f, a dir the shell cannot be given): callers fsync per file instead. */
  unavailable?: string;

  constructor(
    private readonly dir: string,
    private readonly syncfs: (dir: string) => Promise<void> = runSyncF(),
  ) {}

  /** Resolves when a file-system-wide sync that started after this call is done. */
  sync(): Promise<void> {
    if (this.unavailable) return Promise.reject(new Error(this.unavailable));
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.schedule();
    });
  }

  /** After the current turn, so that every write started in it joins the batch. */
  private schedule(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const batch = this.waiting;
    this.waiting = [];
    this.running = true;
    try {
      await this.syncfs(this.dir);
      for (const w of batch) w.resolve();
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      // Causes that every later sync would meet too: the caller stops asking (fsyncs per file).
      const why = e.code === 'ENOENT' ? 'no sh or no sync command' : e.code === 'ENOTSUP' ? e.message : /invalid option|unrecognized option/i.test(e.stderr ?? '') ? 'sync has no -f' : undefined;
      if (why) {
        this.unavailable = `cannot run 'sync -f' (${why}): each file is fsynced instead`;
      }
      const reason = new Error(`sync of the file system of ${this.dir} failed: ${(e.stderr ?? '').trim() || e.message}`);
      for (const w of batch) w.reject(reason);
    } finally {
      this.running = false;
      if (this.waiting.length > 0) this.schedule();
    }
  }
}

/**
 * `sync -f` for each dir written to one long-lived `sh`: forking the daemon itself
 * costs its main thread ~8 ms a sync at 300 MiB RSS (the page tables are copied;
 * a 10,000-object cold start made ~1 s of them), forking a shell costs it nothing.
 * The shell ends after a second without work; the next sync starts another.
 * Answers come in order: `ok`, or `fail <exit status> <sync's message on one line>`.
 */
const LOOP = `while IFS= read -r d; do if e=$(sync -f -- "$d" 2>&1); then echo ok; else printf 'fail %s %s\\n' "$?" "$(printf %s "$e" | tr '\\n' ' ')"; fi; done`;
const IDLE_MS = 1000;

class SyncfsShell {
  private child?: ChildProcessWithoutNullStreams;
  private waiting: Waiter[] = [];
  private idle?: NodeJS.Timeout;

  run(dir: string): Promise<void> {
    // The shell reads one dir per line.
    if (dir.includes('\n')) return Promise.reject(Object.assign(new Error(`the path ${JSON.stringify(dir)} holds a newline`), { code: 'ENOTSUP' }));
    clearTimeout(this.idle);
    const child = this.child ?? this.start();
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      child.stdin.write(`${dir}\n`);
    });
  }

  private start(): ChildProcessWithoutNullStreams {
    const child = spawn('sh', ['-c', LOOP], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => void (stderr = (stderr + b.toString()).slice(-500)));
    child.stdin.on('error', () => undefined); // the exit below says what happened
    createInterface({ input: child.stdout }).on('line', (line) => {
      const w = this.waiting.shift();
      if (line === 'ok') w?.resolve();
      else {
        const [, status, message] = /^fail (\d+) ?(.*)$/.exec(line) ?? [];
        w?.reject(Object.assign(new Error(message || line), { code: status === '127' ? 'ENOENT' : undefined, stderr: message }));
      }
      if (this.waiting.length > 0) return;
      this.idle = setTimeout(() => {
        if (this.child === child) this.child = undefined; // the next sync starts another shell
        child.stdin.end();
      }, IDLE_MS);
    });
    const gone = (err: NodeJS.ErrnoException) => {
      if (this.child !== child) return;
      this.child = undefined;
      clearTimeout(this.idle);
      for (const w of this.waiting.splice(0)) w.reject(Object.assign(err, { stderr: stderr.trim() }));
    };
    child.on('error', gone); // spawn failed: ENOENT when there is no sh
    child.on('exit', (code, signal) => gone(new Error(`the sync shell exited (${signal ?? code})`)));
    return child;
  }
}

function runSyncF(): (dir: string) => Promise<void> {
  const shell = new SyncfsShell();
  return (dir) => shell.run(dir);
}
