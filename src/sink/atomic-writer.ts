/**
 * The atomic writer: puts one payload (file name -> bytes) into one object
 * directory so that a reader sees either the whole old or the whole new set,
 * the way kubelet's AtomicWriter does. It knows nothing of kinds, namespaces or
 * locks (that is FileSink's job); its caller creates the object dir's parent
 * and serializes calls per directory.
 *
 * Inside an object directory every name starting with `..` is ours:
 *
 *   ..2024_05_01_12_00_00_123.<hash>.Ab3dEf/<key>   the payload: one timestamped dir per version
 *   ..data -> ..2024_05_01_12_00_00_123.<hash>.Ab3dEf
 *   <key>  -> ..data/<key>                           what users open
 *
 * `<hash>` (payload-name.ts) is 16 hex of a sha256 over the payload and the
 * file and dir modes and owner it was written with: the name says what the dir
 * holds, so "is it up to date?" needs no file reads. Dirs written by older
 * versions carry no hash and are compared byte for byte.
 *
 * A reader opening `<key>` resolves `..data` once, so it gets a whole file of
 * either the old or the new version; a reader that resolves `..data` once and
 * opens every key below it sees one consistent set. A `..data` symlink is the
 * ownership marker: nothing here touches a directory without one, except the
 * leftovers of our own crash (see `isOwned`).
 *
 * write(dir, payload):
 *  (1) Up to date? lstat and readdir the object dir, readlink `..data` and each
 *      `<key>` link. Quick check (`deep` false): the hash in the payload dir's
 *      name equals the payload's. Deep check (`deep`, or no hash in the name):
 *      also lstat and read every payload file (names, bytes, modes, owners).
 *      If it matches and nothing stale is left, return 'unchanged' having
 *      written nothing. A directory without `..data` is adopted only if it holds
 *      nothing but our own leftovers (a crash before the first swap).
 *  (2) Create the object dir if needed (one created now is "fresh": nothing
 *      can be in its way, so steps 3-6 skip what only an old dir needs), then a
 *      new `..<timestamp>.<hash>.<random>` dir (mkdtemp); write each file
 *      (O_EXCL|O_NOFOLLOW create, write, chmod, chown, fsync; all files in
 *      parallel), fsync the dir.
 *  (3) Point a temporary link `..data_tmp` at the new dir (relative) and rename
 *      it over `..data`: the atomic swap (fresh: the key links of step 4 are
 *      made first, then `..data` in place — a symlink appears whole — so the
 *      new object appears with all its keys at once). fsync the object dir.
 *  (4) Create or repair `<key> -> ..data/<key>` for every key, via a temporary
 *      link renamed over the old entry so a wrong entry is replaced atomically
 *      (fresh: done in step 3, and steps 5-6 have nothing to do).
 *  (5) Remove `<key>` links (links into `..data/`) for keys no longer in the payload.
 *  (6) Remove every other `..`-prefixed entry: old timestamped dirs, leftovers.
 *
 * clear(dir): write an empty payload (so every key disappears at once), unlink
 * `..data`, delete the directory. A crash at any point leaves either an owned
 * dir that the next prune removes again, or an empty unowned one that the next
 * write adopts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { hashInName, isPayloadDirName, payloadDirPrefix, payloadHash } from './payload-name.js';
import { CREATE_NEW, ensureDir, fsyncDir, lstatOrUndefined, modeOwnerOk, notRealDir, readFileNoFollow, readlinkOrUndefined, setModeOwner, type ModeOwner } from './fs-safe.js';

export type Payload = Map<string, Buffer>;

export interface AtomicWriterOptions extends ModeOwner {
  fileMode: number;
  dirMode: number;
  /** Clock for the timestamped dir names (tests). */
  now?: () => Date;
}

export interface WriteOptions {
  /** Compare file bytes even when the payload dir's name carries the right hash. Default true. */
  deep?: boolean;
  /** The caller saw that `dir` does not exist: step (1) has nothing to read. */
  absent?: boolean;
  /** Creates the dir's parent; runs only when something is to be written (the layout is the caller's). */
  ensureParent?: () => Promise<void>;
}

export const DATA = '..data';
const DATA_TMP = '..data_tmp';

export class AtomicWriter {
  constructor(private readonly opts: AtomicWriterOptions) {}

  async write(dir: string, payload: Payload, opts: WriteOptions = {}): Promise<'written' | 'unchanged'> {
    const hash = payloadHash(payload, this.opts);
    const { dirMode } = this.opts;
    // (1) Skipped when the caller has just seen that the dir does not exist.
    if (!opts.absent && (await this.isUpToDate(dir, payload, opts.deep ?? true, hash))) return 'unchanged';

    // (2)
    await opts.ensureParent?.();
    const fresh = await ensureDir(dir, dirMode, this.opts);
    if (!fresh) {
      // It appeared after the caller looked: check (and refuse a foreign dir) after all.
      if (opts.absent && (await this.isUpToDate(dir, payload, true, hash))) return 'unchanged';
      await setModeOwner(dir, dirMode, this.opts);
    }
    const tsDir = await mkdtemp(path.join(dir, payloadDirPrefix(this.opts.now?.() ?? new Date(), hash)));
    try {
      await setModeOwner(tsDir, dirMode, this.opts);
      // allSettled: no write may still be running when the catch below removes the dir.
      const writes = await Promise.allSettled([...payload].map(([key, value]) => this.writeFile(path.join(tsDir, key), value)));
      const failed = writes.find((w) => w.status === 'rejected');
      if (failed) throw failed.reason;
      await fsyncDir(tsDir);
    } catch (err) {
      await rm(tsDir, { recursive: true, force: true });
      throw err;
    }
    const tsName = path.basename(tsDir);

    // (3) In a dir created just now nothing can be in the way: links are made in place,
    // the key links first, so that the object appears whole the moment `..data` does.
    const dataLink = path.join(dir, DATA);
    if (fresh) {
      await Promise.all([...payload.keys()].map((key) => symlink(`${DATA}/${key}`, path.join(dir, key))));
      await symlink(tsName, dataLink);
    } else {
      if (!(await lstatOrUndefined(dataLink))?.isSymbolicLink()) await rm(dataLink, { recursive: true, force: true });
      await rm(path.join(dir, DATA_TMP), { force: true });
      await symlink(tsName, path.join(dir, DATA_TMP));
      await rename(path.join(dir, DATA_TMP), dataLink);
    }
    await fsyncDir(dir);

    // (4)
    if (fresh) return 'written'; // made in (3); (5) and (6): nothing stale in a new dir
    for (const key of payload.keys()) {
      if ((await readlinkOrUndefined(path.join(dir, key))) === `${DATA}/${key}`) continue;
      const tmp = path.join(dir, `..link_tmp.${randomBytes(6).toString('hex')}`);
      await symlink(`${DATA}/${key}`, tmp);
      await rename(tmp, path.join(dir, key)).catch(async (err: unknown) => {
        await rm(tmp, { force: true });
        throw new Error(`${dir}: cannot place key ${JSON.stringify(key)}: a foreign entry is in the way`, { cause: err });
      });
    }

    // (5) and (6)
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.name === DATA || entry.name === tsName || payload.has(entry.name)) continue;
      if (entry.name.startsWith('..')) {
        await rm(path.join(dir, entry.name), { recursive: true, force: true }); // (6)
      } else if (await isKeyLink(dir, entry.name)) {
        await rm(path.join(dir, entry.name), { force: true }); // (5)
      }
    }
    return 'written';
  }

  /** Empties an owned dir atomically, then removes it. */
  async clear(dir: string): Promise<void> {
    await this.write(dir, new Map(), { deep: false });
    await rm(path.join(dir, DATA), { force: true });
    await rm(dir, { recursive: true, force: true });
  }

  /** Step (1): true only when the directory holds exactly this payload. */
  async isUpToDate(dir: string, payload: Payload, deep = true, hash = payloadHash(payload, this.opts)): Promise<boolean> {
    const { dirMode } = this.opts;
    const dirStat = await lstatOrUndefined(dir);
    if (!dirStat) return false;
    notRealDir(dir, dirStat);
    const entries = await readdir(dir, { withFileTypes: true });
    const target = await readlinkOrUndefined(path.join(dir, DATA));
    if (target === undefined) {
      for (const e of entries) {
        if (!e.name.startsWith('..') && !(await isKeyLink(dir, e.name))) {
          throw new Error(`${dir} exists and is not managed by confsync (no ${DATA}); refusing to write into it`);
        }
      }
      return false;
    }
    if (!modeOwnerOk(dirStat, dirMode, this.opts)) return false;
    if (!isPayloadDirName(target)) return false; // hand-made or foreign target: replace it
    const named = hashInName(target);
    if (named !== undefined && named !== hash) return false;
    if (named === undefined || deep) {
      if (!(await this.filesMatch(path.join(dir, target), payload))) return false;
    } else if (!entries.some((e) => e.name === target && e.isDirectory())) {
      return false;
    }

    for (const e of entries) {
      if (e.name === DATA || e.name === target) continue;
      if (e.name.startsWith('..')) return false; // stale ts dir or temp link: (6) has work
      const isLink = await isKeyLink(dir, e.name);
      if (payload.has(e.name) ? !isLink : isLink) return false; // (4) or (5) has work
    }
    return [...payload.keys()].every((k) => entries.some((e) => e.name === k));
  }

  /** The deep part of step (1): the payload dir holds exactly these files, bytes, modes and owners. */
  private async filesMatch(tsDir: string, payload: Payload): Promise<boolean> {
    const { fileMode, dirMode } = this.opts;
    const tsStat = await lstatOrUndefined(tsDir);
    if (!tsStat?.isDirectory() || !modeOwnerOk(tsStat, dirMode, this.opts)) return false;
    const files = await readdir(tsDir);
    if (files.length !== payload.size || files.some((f) => !payload.has(f))) return false;
    const filesOk = await Promise.all(
      [...payload].map(async ([key, want]) => {
        const st = await lstatOrUndefined(path.join(tsDir, key));
        if (!st?.isFile() || st.size !== want.length || !modeOwnerOk(st, fileMode, this.opts)) return false;
        return (await readFileNoFollow(path.join(tsDir, key))).equals(want);
      }),
    );
    return !filesOk.includes(false);
  }

  private async writeFile(file: string, value: Buffer): Promise<void> {
    const fh = await open(file, CREATE_NEW, 0o600);
    try {
      await fh.writeFile(value);
      await fh.chmod(this.opts.fileMode);
      if (this.opts.uid !== undefined || this.opts.gid !== undefined) await fh.chown(this.opts.uid ?? -1, this.opts.gid ?? -1);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

/**
 * Ours: the dir has a `..data` link — or it is what a crash mid-way leaves of
 * one (a first projection cut before its swap, a removal cut after unlinking
 * `..data`): non-empty, holding nothing but our payload dirs, temp link and key
 * links. Such leftovers can hold a deleted secret's plaintext, so they must be
 * listed (and so pruned) like any owned object. Anything else is not ours.
 */
export async function isOwned(dir: string): Promise<boolean> {
  const st = await lstatOrUndefined(dir);
  if (!st?.isDirectory()) return false;
  if ((await lstatOrUndefined(path.join(dir, DATA)))?.isSymbolicLink()) return true;
  const entries = await readdir(dir).catch(() => [] as string[]);
  if (entries.length === 0) return false;
  for (const name of entries) {
    if (isPayloadDirName(name) || name === DATA_TMP || (await isKeyLink(dir, name))) continue;
    return false;
  }
  return true;
}

/** A user-visible link we made: `<name> -> ..data/<name>`. */
async function isKeyLink(dir: string, name: string): Promise<boolean> {
  return (await readlinkOrUndefined(path.join(dir, name))) === `${DATA}/${name}`;
}
