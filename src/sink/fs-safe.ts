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
 *
 * Metadata calls are synchronous on purpose. Each async fs call is a round trip
 * through libuv's thread pool (a futex wake, an eventfd write and read, an epoll
 * wake-up): measured on one projection, ~40 such trips cost more CPU than the
 * syscalls themselves, which take microseconds on a local disk. Only fsync,
 * which can take milliseconds, goes to the pool (`fsyncFd`, `fsyncDir`).
 */
import { chmodSync, chownSync, closeSync, constants, fsync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = constants;
/** Create a new file; fails on anything already there, a dangling link included. */
export const CREATE_NEW = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

export interface ModeOwner {
  uid?: number;
  gid?: number;
}

export function lstatOrUndefined(p: string): Stats | undefined {
  try {
    // No exception for ENOENT (~7 µs each to build and catch; a cold start asks about 20,000 absent dirs).
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined; // ENOENT never throws here
    throw err;
  }
}

/** The link's target, or undefined when `p` is absent or not a link. */
export function readlinkOrUndefined(p: string): string | undefined {
  try {
    return readlinkSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EINVAL' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** fsync in the thread pool: it can take milliseconds. */
export const fsyncFd = promisify(fsync);

export async function fsyncDir(dir: string): Promise<void> {
  const fd = openSync(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

export function modeOwnerOk(st: Stats, mode: number, owner: ModeOwner): boolean {
  return (st.mode & 0o7777) === mode && (owner.uid === undefined || st.uid === owner.uid) && (owner.gid === undefined || st.gid === owner.gid);
}

export function setModeOwner(p: string, mode: number, owner: ModeOwner): void {
  chmodSync(p, mode); // explicit: mkdir/mkdtemp modes are filtered by the umask
  if (owner.uid !== undefined || owner.gid !== undefined) chownSync(p, owner.uid ?? -1, owner.gid ?? -1);
}

/**
 * mkdir one level; a new dir gets mode and owner (true: created now). An
 * existing entry must be a real dir: a hand-made link must not lead writes out
 * of the root.
 */
export function ensureDir(dir: string, mode: number, owner: ModeOwner): boolean {
  try {
    mkdirSync(dir, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    notRealDir(dir, lstatSync(dir));
    return false;
  }
  setModeOwner(dir, mode, owner);
  return true;
}

/** A file's bytes; fails with ELOOP when `file` is a link. */
export function readFileNoFollow(file: string): Buffer {
  const fd = openSync(file, O_RDONLY | O_NOFOLLOW);
  try {
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
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
export function checkRealDirs(base: string, segments: string[]): Stats[] {
  const found: Stats[] = [];
  let p = base;
  for (let i = 0; i <= segments.length; i++) {
    if (i > 0) p = path.join(p, segments[i - 1]!);
    const st = lstatOrUndefined(p);
    if (!st) break;
    notRealDir(p, st);
    found.push(st);
  }
  return found;
}

