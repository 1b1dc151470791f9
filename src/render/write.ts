import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { AtomicWriter } from '../sink/atomic-writer.js';
import { lstatOrUndefined } from '../sink/fs-safe.js';

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

/** How a `check` refusal leaves the atomic writer: it removes the new payload dir and rethrows. */
class CheckRefused extends Error {}

/**
 * The directory form (`dest` + `destFile`): `dir` is projected the way the file
 * sink projects an object (sink/atomic-writer.ts), with one file in it:
 *
 *   <dir>/..2026_12_05_14_03_00_123.<hash>.Ab3dEf/<name>   the payload: mode and owner set before any byte
 *   <dir>/..data -> ..2026_12_05_14_03_00_123.<hash>.Ab3dEf
 *   <dir>/<name> -> ..data/<name>                          what the service opens
 *
 *  (1) `dir` is lstat-ed: a symbolic link there is refused, never followed (so
 *      is a file, or a dir holding anything but confsync's own entries);
 *  (2) identical bytes, mode and owner already live: nothing is written;
 *  (3) a new payload dir with the file, written and fsynced;
 *  (4) `check` runs against the file in the new payload dir; a failure removes
 *      that dir and the old payload stays live;
 *  (5) `..data` is swapped (temp link + rename: a reader opening `<dir>/<name>`
 *      gets the whole old or the whole new file), `<name>` linked, the old
 *      payload dir removed.
 *
 * (2)-(5) are the AtomicWriter's steps (1)-(6); `check` is its `beforeSwap`.
 * Node has no openat(): a link swapped in for `dir` between (1) and the writer's
 * own lstat is not caught — only whoever can write dest's parent can do that.
 */
export async function writeCheckedDir(dir: string, name: string, data: Buffer, opts: WriteOptions): Promise<WriteResult> {
  // (1)
  const st = lstatOrUndefined(dir);
  if (st?.isSymbolicLink()) return { refused: `${dir} is a symbolic link; a directory dest is never followed (remove the link or choose another dest)` };
  if (st && !st.isDirectory()) return { refused: `${dir} exists and is not a directory (a directory dest needs one confsync manages, or none)` };
  const writer = new AtomicWriter({ fileMode: opts.mode, dirMode: opts.dirMode, uid: opts.uid, gid: opts.gid });
  let refused: string | undefined;
  try {
    // (2)-(5)
    return await writer.write(dir, new Map([[name, data]]), {
      absent: !st,
      ensureParent: async () => {
        await fs.mkdir(path.dirname(dir), { recursive: true, mode: opts.dirMode });
      },
      beforeSwap: async (payloadDir) => {
        refused = await opts.check?.(path.join(payloadDir, name));
        if (refused !== undefined) throw new CheckRefused(refused);
      },
    });
  } catch (err) {
    if (err instanceof CheckRefused && refused !== undefined) return { refused };
    throw err;
  }
}
