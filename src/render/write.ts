import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

export interface WriteOptions {
  mode: number;
  /** Mode of dirs created on the way to dest (0700 where the file may hold secrets). */
  dirMode: number;
  uid?: number;
  gid?: number;
  /** Runs with the new file complete at `tmp`; a reason means "do not swap". */
  check?: (tmp: string) => Promise<string | undefined>;
}

export type WriteResult = 'unchanged' | 'written' | { refused: string };

/**
 * Replaces `dest` with `data`, checked before it goes live:
 *
 *  (1) identical bytes already there: nothing is written (no reload either);
 *  (2) a temp file is made beside dest with O_EXCL (a fresh random name: it never
 *      opens a path someone placed there), mode and owner set before any byte;
 *  (3) written and fsynced;
 *  (4) `check` runs against it; a failure removes it and dest stays as it was;
 *  (5) renamed over dest (atomic: a reader sees the old or the new file, never a
 *      mix), and the dir fsynced so the rename survives a crash.
 *
 * Failures other than the check throw; the temp file is removed either way.
 * (state/durable-file.ts does (2), (3), (5) for the daemon's own 0600 state; a
 * template needs its own mode and owner, and the check between (3) and (5).)
 */
export async function writeChecked(dest: string, data: Buffer, opts: WriteOptions): Promise<WriteResult> {
  // (1)
  const current = await fs.readFile(dest).catch(() => undefined);
  if (current?.equals(data)) return 'unchanged';
  const dir = path.dirname(dest);
  await fs.mkdir(dir, { recursive: true, mode: opts.dirMode });
  // Hidden, and never a name a reader globbing `*.conf` picks up.
  const tmp = path.join(dir, `.${path.basename(dest)}.confsync-${randomBytes(6).toString('hex')}`);
  try {
    // (2), (3)
    const fh = await fs.open(tmp, 'wx', 0o600);
    try {
      if (opts.uid !== undefined || opts.gid !== undefined) await fh.chown(opts.uid ?? -1, opts.gid ?? -1);
      await fh.chmod(opts.mode); // after chown, which may clear set-id bits; umask never applies
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    // (4)
    const refused = await opts.check?.(tmp);
    if (refused !== undefined) {
      await fs.rm(tmp, { force: true });
      return { refused };
    }
    // (5)
    await fs.rename(tmp, dest);
    const d = await fs.open(dir, 'r');
    await d.sync().finally(() => d.close());
    return 'written';
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}
