import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';

/**
 * Replaces `file` with `data` so that a crash leaves the old or the new file,
 * never a torn one: a 0600 temp file beside it, fsync, rename, fsync the dir.
 * On failure the temp file is removed and the error is thrown (the old file stays).
 * `data` may be a function that writes the content in pieces, in order (a large
 * file never held whole: the local snapshot).
 */
export async function writeDurably(file: string, data: string | Uint8Array | ((write: (piece: Uint8Array) => Promise<void>) => Promise<unknown>)): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.chmod(0o600);
      // writeFile on a handle writes at its current position: the pieces follow each other.
      if (typeof data === 'function') await data((piece) => fh.writeFile(piece));
      else await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
    const dir = await fs.open(path.dirname(file), 'r');
    await dir.sync().finally(() => dir.close());
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/**
 * Creates `dir` 0700, or tightens an existing dir this process owns to 0700 (a
 * systemd StateDirectory= listed beside the 0755 files root is created 0755).
 * Not for a dir others must read: the caller passes tighten=false when the state
 * dir is (inside) a files or secrets root. Throws what mkdir throws; a failed
 * chmod is left alone (the files in it are 0600 anyway).
 */
export async function ensurePrivateDir(dir: string, logger: Logger, tighten = true): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  if (!tighten) return;
  const st = await fs.stat(dir);
  if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) {
    await fs.chmod(dir, 0o700).then(
      () => logger.info({ stateDir: dir, was: (st.mode & 0o777).toString(8) }, 'state dir tightened to 0700'),
      () => undefined,
    );
  }
}
