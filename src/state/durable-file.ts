import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Replaces `file` with `data` so that a crash leaves the old or the new file,
 * never a torn one: a 0600 temp file beside it, fsync, rename, fsync the dir.
 * On failure the temp file is removed and the error is thrown (the old file stays).
 */
export async function writeDurably(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.chmod(0o600);
      await fh.writeFile(data);
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
