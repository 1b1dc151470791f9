/**
 * Group commit for a first full sync: many object dirs written at once share one
 * file-system-wide sync (syncfs(2), through coreutils' `sync -f DIR`) instead of
 * three fsyncs each. Node has no syncfs binding, and a process per batch is cheap
 * next to what it replaces: a cold start of 20,000 objects made ~60,000 fsyncs,
 * each a disk flush on a file system without a journal and a journal commit on
 * one with it.
 *
 * `sync()` resolves once a syncfs that STARTED AFTER the call has finished: then
 * everything the caller wrote before calling is on disk, as a per-file fsync
 * would have made it (syncfs writes back every dirty inode of the file system and
 * reports a write-back error since Linux 5.8). Calls that arrive while a sync runs
 * wait for the next one, which serves them all: batches form by themselves, no
 * timer to tune. One put on a quiet daemon does not come here (it fsyncs its own
 * files: one process per put would cost more than the fsyncs).
 */
import { execFile } from 'node:child_process';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SyncBatch {
  private waiting: Waiter[] = [];
  private running = false;
  private scheduled = false;
  /** Set when `sync -f` cannot run here (no coreutils `sync`, or too old for -f): callers fsync per file instead. */
  unavailable?: string;

  constructor(
    private readonly dir: string,
    private readonly syncfs: (dir: string) => Promise<void> = runSyncF,
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
      if (e.code === 'ENOENT' || /invalid option|unrecognized option/i.test(e.stderr ?? '')) {
        this.unavailable = `cannot run 'sync -f' (${e.code === 'ENOENT' ? 'no sync command' : 'sync has no -f'}): each file is fsynced instead`;
      }
      const reason = new Error(`sync of the file system of ${this.dir} failed: ${(e.stderr ?? '').trim() || e.message}`);
      for (const w of batch) w.reject(reason);
    } finally {
      this.running = false;
      if (this.waiting.length > 0) this.schedule();
    }
  }
}

function runSyncF(dir: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('sync', ['-f', dir], { timeout: 120_000 }, (err, _stdout, stderr) => (err ? reject(Object.assign(err, { stderr })) : resolve())),
  );
}
