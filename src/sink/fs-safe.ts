/**
 * Small fs helpers for the file sink: "absent" as undefined instead of an
 * exception, directory fsync, mode/owner checks.
 */
import { chmod, chown, lstat, mkdir, open, readlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';

export interface ModeOwner {
  uid?: number;
  gid?: number;
}

export async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  return lstat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
}

/** The link's target, or undefined when `p` is absent or not a link. */
export async function readlinkOrUndefined(p: string): Promise<string | undefined> {
  return readlink(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'EINVAL' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function modeOwnerOk(st: Stats, mode: number, owner: ModeOwner): boolean {
  return (st.mode & 0o7777) === mode && (owner.uid === undefined || st.uid === owner.uid) && (owner.gid === undefined || st.gid === owner.gid);
}

export async function setModeOwner(p: string, mode: number, owner: ModeOwner): Promise<void> {
  await chmod(p, mode); // explicit: mkdir/mkdtemp modes are filtered by the umask
  if (owner.uid !== undefined || owner.gid !== undefined) await chown(p, owner.uid ?? -1, owner.gid ?? -1);
}

/**
 * mkdir one level; a new dir gets mode and owner. An existing entry must be a
 * real dir: a hand-made link must not lead writes out of the root.
 */
export async function ensureDir(dir: string, mode: number, owner: ModeOwner): Promise<void> {
  try {
    await mkdir(dir, { mode });
    await setModeOwner(dir, mode, owner);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const st = await lstat(dir);
    if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory (links are not followed)`);
  }
}
