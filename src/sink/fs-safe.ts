/**
 * Small fs helpers for the file sink: "absent" as undefined instead of an
 * exception, directory fsync, mode/owner checks, and the no-link rules.
 *
 * Below its kind roots the sink never follows a link: every directory on the
 * way is lstat-ed (`checkRealDirs`), and files and dirs are opened with
 * O_NOFOLLOW, so a link planted where a namespace, object or payload dir is
 * expected is refused instead of leading reads, writes or removals elsewhere.
 * Node has no openat(), so a link swapped in between the check and the use is
 * not caught; that window is only open to whoever can write inside the root,
 * which is why group/world-writable dirs there are fixed (see FileSink).
 */
import { chmod, chown, lstat, mkdir, open, readFile, readlink } from 'node:fs/promises';
import { constants, type Stats } from 'node:fs';
import path from 'node:path';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = constants;
/** Create a new file; fails on anything already there, a dangling link included. */
export const CREATE_NEW = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

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
  const fh = await open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
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
 * mkdir one level; a new dir gets mode and owner (true: created now). An
 * existing entry must be a real dir: a hand-made link must not lead writes out
 * of the root.
 */
export async function ensureDir(dir: string, mode: number, owner: ModeOwner): Promise<boolean> {
  try {
    await mkdir(dir, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    notRealDir(dir, await lstat(dir));
    return false;
  }
  await setModeOwner(dir, mode, owner);
  return true;
}

/** A file's bytes; fails with ELOOP when `file` is a link. */
export async function readFileNoFollow(file: string): Promise<Buffer> {
  return readFile(file, { flag: O_RDONLY | O_NOFOLLOW });
}

/** Throws when `st` (from lstat of `p`) is not a real directory. */
export function notRealDir(p: string, st: Stats): void {
  if (st.isSymbolicLink()) throw new Error(`${p} is a symbolic link; the file sink does not follow links below its roots`);
  if (!st.isDirectory()) throw new Error(`${p} exists and is not a directory`);
}

/**
 * lstat `base` and each of `segments` below it, in order: each one that exists
 * must be a real directory. Returns the stats of those that exist (the rest are absent).
 */
export async function checkRealDirs(base: string, segments: string[]): Promise<Stats[]> {
  const found: Stats[] = [];
  let p = base;
  for (let i = 0; i <= segments.length; i++) {
    if (i > 0) p = path.join(p, segments[i - 1]!);
    const st = await lstatOrUndefined(p);
    if (!st) break;
    notRealDir(p, st);
    found.push(st);
  }
  return found;
}

