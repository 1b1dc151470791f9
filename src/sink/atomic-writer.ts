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
 *      also lstat and read every payload file (names, bytes, modes, owners) —
 *      unless their lstat (inode, size, mtime, ctime, mode, owner) is what it was
 *      when the bytes last matched here (`verified`): an edit moves mtime/ctime, so a
 *      periodic resync reads each file once, then only lstats it.
 *      If it matches and nothing stale is left, return 'unchanged' having
 *      written nothing. A directory without `..data` is adopted only if it holds
 *      nothing but our own leftovers (a crash before the first swap).
 *      After a restart the first quick check of a dir can rest on the previous
 *      process's stamp (`carry`): the dir's lstat unchanged since that process
 *      found it up to date (no entry added, removed, renamed or replaced, no
 *      chmod or chown: each moves mtime or ctime) and the hash in its `..data`
 *      target is this payload's — the quick check's answer, from one lstat
 *      instead of a readdir and a readlink per key. What neither sees (a payload
 *      file edited in place) waits for the deep pass, as between restarts.
 *  (2) Create the object dir if needed (one created now is "fresh": nothing
 *      can be in its way, so steps 3-6 skip what only an old dir needs), then a
 *      new `..<timestamp>.<hash>.<random>` dir (mkdtemp); write each file
 *      (O_EXCL|O_NOFOLLOW create, write, chmod, chown, fsync; all files in
 *      parallel), fsync the dir (or, given `durable`, one shared sync for both). Then `beforeSwap`, if given, runs against the
 *      complete new dir (a template's `check`): if it throws, the new dir (and
 *      an object dir created by this call) is removed and the error rethrown —
 *      nothing was swapped, so the old payload stays live. A failure in any
 *      other part of (2) is handled the same way.
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
import { createHash, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { closeSync, fchmodSync, fchownSync, lstatSync, mkdtempSync, openSync, readdirSync, renameSync, rmdirSync, rmSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { hashInName, isPayloadDirName, payloadDirPrefix, payloadHash } from './payload-name.js';
import { CREATE_NEW, ensureDir, fsyncDir, fsyncFd, lstatOrUndefined, modeOwnerOk, notRealDir, readFileNoFollow, readlinkOrUndefined, setModeOwner, type ModeOwner } from './fs-safe.js';

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
  /**
   * The dir is on a RAM filesystem (tmpfs): fsync does nothing there, so the
   * fsyncs are skipped — each is a thread-pool round trip, ~20 µs of CPU, twelve
   * per object of ten keys. Ordering needs no fsync: a process crash loses no
   * page-cache state, and a power loss takes the whole filesystem with it.
   */
  volatile?: boolean;
  /**
   * Durability shared with other writes (a first full sync: sync-batch.ts): the
   * new payload's files and dir are made durable by awaiting this, once before
   * the swap and once after it, instead of an fsync each. Ignored when `volatile`.
   */
  durable?: () => Promise<void>;
  /**
   * The object dir's lstat, taken by the caller just before this call (FileSink's
   * no-link check): step (1) uses it instead of taking its own. A restart checks
   * 20,000 dirs; every lstat per object is ~0.25 s of it.
   */
  dirStat?: Stats;
  /**
   * Runs at the end of step (2) with the new payload dir complete and fsynced,
   * before anything is swapped. Throwing removes the new dir and rethrows: the
   * old payload stays live (render/write.ts runs a template's `check` here).
   */
  beforeSwap?: (payloadDir: string) => Promise<void>;
}

export const DATA = '..data';
const DATA_TMP = '..data_tmp';

/** What an up-to-date check saw, for `unchangedSince`: the object dir's and payload dir's lstat. */
interface Stamp {
  dir: StatMark;
  target: string;
  payloadDir: StatMark;
}

/** A payload dir written ahead of its swap (`prepare`): complete, with this lstat, once `done` resolves. */
interface Prepared {
  hash: string;
  tsDir: string;
  done: Promise<StatMark>;
}

/** A stamp as handed to the next process (FileSink saves them at stop): object dir, `..data` target, the two lstat marks. */
export type SavedStamp = [dir: string, target: string, dirMark: StatMark, payloadDirMark: StatMark];

export class AtomicWriter {
  /** Object dir -> its `..data` target and a digest of its files' lstat when their bytes last matched. */
  private readonly verified = new Map<string, string>();
  /** Object dir -> its stamp when it was last found up to date (dropped by any write or clear). */
  private readonly stamps = new Map<string, Stamp>();
  /** Stamps of the previous process, each used at most once, by its dir's first quick check here (1). */
  private readonly carried = new Map<string, Stamp>();
  /** Object dir -> the payload dir `prepare` wrote for it (one at a time). */
  private readonly prepared = new Map<string, Prepared>();
  /** Prepared payload dirs swapped in by a `write`, and thrown away (another payload came, or none). */
  readonly preparedCounts = { swapped: 0, discarded: 0 };

  constructor(private readonly opts: AtomicWriterOptions) {}

  /** The stamps of the dirs found or left up to date, for the next process. */
  savedStamps(): SavedStamp[] {
    return Array.from(this.stamps, ([dir, s]) => [dir, s.target, s.dir, s.payloadDir]);
  }

  /** Stamps the previous process saved (checked for shape by the caller). */
  carry(saved: Iterable<SavedStamp>): void {
    for (const [dir, target, dirMark, payloadDir] of saved) this.carried.set(dir, { dir: dirMark, target, payloadDir });
  }

  /** Metadata calls are synchronous and only the fsyncs wait in the thread pool: fs-safe.ts says why. */
  async write(dir: string, payload: Payload, opts: WriteOptions = {}): Promise<'written' | 'unchanged'> {
    const hash = payloadHash(payload, this.opts);
    const { dirMode } = this.opts;
    this.stamps.delete(dir);
    // (1) Skipped when the caller has just seen that the dir does not exist.
    if (!opts.absent && this.isUpToDate(dir, payload, opts.deep ?? true, hash, opts.dirStat)) {
      await this.discardPrepared(dir);
      return 'unchanged';
    }

    // (2)
    await opts.ensureParent?.();
    // The caller's lstat (just taken, a real dir) saves a mkdir that fails with
    // EEXIST (an exception built and caught) and two more lstats on every update.
    const known = !opts.absent ? opts.dirStat : undefined;
    const fresh = known ? false : ensureDir(dir, dirMode, this.opts);
    if (!fresh) {
      // It appeared after the caller looked: check (and refuse a foreign dir) after all.
      if (opts.absent && this.isUpToDate(dir, payload, true, hash)) return 'unchanged';
      // Only when wrong: a chmod is an inotify event in the namespace dir, and every
      // watcher there (ours too) re-reads that dir — O(objects) per write.
      if (!modeOwnerOk(known ?? lstatSync(dir), dirMode, this.opts)) setModeOwner(dir, dirMode, this.opts);
    }
    // Prepared ahead (`prepare`): complete and fsynced already.
    const prepared = await this.takePrepared(dir, hash);
    const tsDir = prepared ?? this.newPayloadDir(dir, hash);
    try {
      if (!prepared) await this.fillPayloadDir(tsDir, payload, !opts.volatile, opts.durable);
      await opts.beforeSwap?.(tsDir);
    } catch (err) {
      rmSync(tsDir, { recursive: true, force: true });
      // A dir made by this call holds nothing else now: leave no empty, unowned dir behind
      // (if something appeared in it meanwhile, rmdir fails and the next write adopts it).
      if (fresh) {
        try {
          rmdirSync(dir);
        } catch {
          /* not empty any more: adopted by the next write */
        }
      }
      throw err;
    }
    const tsName = path.basename(tsDir);

    // (3) In a dir created just now nothing can be in the way: links are made in place,
    // the key links first, so that the object appears whole the moment `..data` does.
    const dataLink = path.join(dir, DATA);
    if (fresh) {
      for (const key of payload.keys()) symlinkSync(`${DATA}/${key}`, path.join(dir, key));
      symlinkSync(tsName, dataLink);
    } else {
      if (!lstatOrUndefined(dataLink)?.isSymbolicLink()) rmSync(dataLink, { recursive: true, force: true });
      // Left only by a crash between the two calls below: no rmSync (an ENOENT caught) per update.
      if (lstatOrUndefined(path.join(dir, DATA_TMP))) rmSync(path.join(dir, DATA_TMP), { force: true });
      symlinkSync(tsName, path.join(dir, DATA_TMP));
      renameSync(path.join(dir, DATA_TMP), dataLink);
    }
    if (!opts.volatile) await (opts.durable ? opts.durable() : fsyncDir(dir));

    // (4)
    if (fresh) return this.stamped(dir, tsName); // made in (3); (5) and (6): nothing stale in a new dir
    for (const key of payload.keys()) {
      if (readlinkOrUndefined(path.join(dir, key)) === `${DATA}/${key}`) continue;
      const tmp = path.join(dir, `..link_tmp.${randomBytes(6).toString('hex')}`);
      symlinkSync(`${DATA}/${key}`, tmp);
      try {
        renameSync(tmp, path.join(dir, key));
      } catch (err) {
        rmSync(tmp, { force: true });
        throw new Error(`${dir}: cannot place key ${JSON.stringify(key)}: a foreign entry is in the way`, { cause: err });
      }
    }

    // (5) and (6)
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === DATA || entry.name === tsName || payload.has(entry.name)) continue;
      if (entry.name.startsWith('..')) {
        removeOwnEntry(path.join(dir, entry.name), entry.isDirectory()); // (6)
      } else if (isKeyLink(dir, entry.name)) {
        rmSync(path.join(dir, entry.name), { force: true }); // (5)
      }
    }
    return this.stamped(dir, tsName);
  }

  /**
   * Step (2) ahead of time, for an update that will probably come (a change etcd
   * committed, held until the other watchers are known past it): the payload dir
   * is written and fsynced now, beside the wait, and nothing is swapped. The
   * `write` of the same payload then only swaps (3); a different payload (or
   * none) leaves the dir to (6). Only for a dir that is ours already (`..data`):
   * nothing appears in the namespace dir. Ours to trust: the dir's lstat when it
   * was complete is kept, and any entry added, removed or renamed in it since
   * moves its mtime; then it is not used (and goes in (6)).
   */
  async prepare(dir: string, payload: Payload, opts: Pick<WriteOptions, 'volatile' | 'dirStat'> = {}): Promise<boolean> {
    const hash = payloadHash(payload, this.opts);
    const known = this.prepared.get(dir);
    if (known?.hash === hash) return false;
    const dirStat = opts.dirStat ?? lstatOrUndefined(dir);
    if (!dirStat?.isDirectory()) return false;
    const target = readlinkOrUndefined(path.join(dir, DATA));
    if (target === undefined || !isPayloadDirName(target) || hashInName(target) === hash) return false;
    await this.discardPrepared(dir);
    const tsDir = this.newPayloadDir(dir, hash);
    const entry: Prepared = { hash, tsDir, done: this.fillPayloadDir(tsDir, payload, !opts.volatile).then(() => statMark(lstatSync(tsDir))) };
    this.prepared.set(dir, entry);
    try {
      await entry.done;
      return true;
    } catch {
      if (this.prepared.get(dir) === entry) await this.discardPrepared(dir);
      return false;
    }
  }

  /**
   * A prepared payload dir that no `write` will take: removed (nothing points at
   * it). Like (6), under the caller's lock for the dir, and a link found in its
   * place is removed itself, never followed.
   */
  async discardPrepared(dir: string): Promise<void> {
    const p = this.prepared.get(dir);
    if (!p) return;
    this.prepared.delete(dir);
    this.preparedCounts.discarded++;
    await p.done.catch(() => undefined);
    const st = lstatOrUndefined(p.tsDir);
    if (st) removeOwnEntry(p.tsDir, st.isDirectory());
  }

  /** (2) for a prepared payload: the dir, if it is this payload's and as it was left complete. */
  private async takePrepared(dir: string, hash: string): Promise<string | undefined> {
    const p = this.prepared.get(dir);
    if (!p) return undefined;
    this.prepared.delete(dir);
    const mark = await p.done.catch(() => undefined);
    const st = lstatOrUndefined(p.tsDir);
    // Not this payload, or touched since: (6) removes it with the other stale entries.
    const use = p.hash === hash && mark !== undefined && st?.isDirectory() === true && sameStat(mark, st);
    this.preparedCounts[use ? 'swapped' : 'discarded']++;
    return use ? p.tsDir : undefined;
  }

  /** (2) A new, empty `..<timestamp>.<hash>.<random>` dir in `dir`. */
  private newPayloadDir(dir: string, hash: string): string {
    return mkdtempSync(path.join(dir, payloadDirPrefix(this.opts.now?.() ?? new Date(), hash)));
  }

  /**
   * (2) The payload's files in the new dir `tsDir`: created, written, fsynced (or
   * made durable by `shared`). Every file is created before its fsync is awaited
   * (writeFile's synchronous part), so the dir's fsync runs beside theirs, not
   * after them: the swap waits for the slowest one rather than for a file's and
   * then the dir's. allSettled: no fsync may still be running when a caller
   * removes the dir after a failure.
   */
  private async fillPayloadDir(tsDir: string, payload: Payload, durable: boolean, shared?: () => Promise<void>): Promise<void> {
    setModeOwner(tsDir, this.opts.dirMode, this.opts);
    if (!durable) shared = undefined;
    const writes = [...payload].map(([key, value]) => this.writeFile(path.join(tsDir, key), value, durable && !shared));
    const settled = await Promise.allSettled(durable && !shared ? [...writes, fsyncDir(tsDir)] : writes);
    const failed = settled.find((w) => w.status === 'rejected');
    if (failed) throw failed.reason;
    if (shared) await shared();
  }

  /** Just written: what the resync's cheap pass compares against (the object dir's lstat; the payload dir's and the files' digest wait for a deep check). */
  private stamped(dir: string, target: string): 'written' {
    const dirStat = lstatOrUndefined(dir);
    const payloadDir = lstatOrUndefined(path.join(dir, target));
    if (dirStat && payloadDir) this.stamps.set(dir, { dir: statMark(dirStat), target, payloadDir: statMark(payloadDir) });
    return 'written';
  }

  /** Empties an owned dir atomically, then removes it. */
  async clear(dir: string): Promise<void> {
    await this.write(dir, new Map(), { deep: false });
    this.verified.delete(dir);
    this.stamps.delete(dir);
    rmSync(path.join(dir, DATA), { force: true });
    rmSync(dir, { recursive: true, force: true });
  }

  /** Step (1): true only when the directory holds exactly this payload. */
  isUpToDate(dir: string, payload: Payload, deep = true, hash = payloadHash(payload, this.opts), stat?: Stats): boolean {
    const { dirMode } = this.opts;
    const dirStat = stat ?? lstatOrUndefined(dir);
    if (!dirStat) return false;
    notRealDir(dir, dirStat);
    const carried = this.carried.get(dir);
    if (carried) {
      this.carried.delete(dir);
      if (!deep && hashInName(carried.target) === hash && sameStat(carried.dir, dirStat) && modeOwnerOk(dirStat, dirMode, this.opts)) {
        this.stamps.set(dir, carried);
        return true;
      }
    }
    const target = readlinkOrUndefined(path.join(dir, DATA));
    // An update's new hash is not the one in the live payload dir's name: the
    // answer is known before listing the dir (a name with a hash is a payload dir name).
    const named = target === undefined ? undefined : hashInName(target);
    if (named !== undefined && named !== hash) return false;
    const entries = readdirSync(dir, { withFileTypes: true });
    if (target === undefined) {
      for (const e of entries) {
        if (!e.name.startsWith('..') && !isKeyLink(dir, e.name)) {
          throw new Error(`${dir} exists and is not managed by confsync (no ${DATA}); refusing to write into it`);
        }
      }
      return false;
    }
    if (!modeOwnerOk(dirStat, dirMode, this.opts)) return false;
    if (!isPayloadDirName(target)) return false; // hand-made or foreign target: replace it
    let payloadDir: Stats | undefined;
    if (named === undefined || deep) {
      payloadDir = this.filesMatch(dir, target, payload);
      if (!payloadDir) return false;
    } else if (!entries.some((e) => e.name === target && e.isDirectory())) {
      return false;
    }

    for (const e of entries) {
      if (e.name === DATA || e.name === target) continue;
      if (e.name.startsWith('..')) return false; // stale ts dir or temp link: (6) has work
      const isLink = isKeyLink(dir, e.name);
      if (payload.has(e.name) ? !isLink : isLink) return false; // (4) or (5) has work
    }
    if (![...payload.keys()].every((k) => entries.some((e) => e.name === k))) return false;
    payloadDir ??= lstatOrUndefined(path.join(dir, target));
    if (payloadDir) this.stamps.set(dir, { dir: statMark(dirStat), target, payloadDir: statMark(payloadDir) });
    return true;
  }

  /**
   * The periodic resync's cheap pass: is `dir` as it was when last found up to
   * date? One lstat: any entry of the object dir added, removed or replaced (a
   * key link, `..data`, a payload dir) moves its mtime; a chmod or chown moves
   * ctime. `deep` also lstats the payload dir (a file added or removed in it
   * moves its mtime) and each file, which catches an edit in place (it moves the
   * file's mtime and ctime) — but only if the bytes were read and matched here
   * before (`verified`). The payload dir waits for the deep pass because at
   * 20,000 objects its lstat was half of an idle daemon's CPU, and a reader
   * goes through the key links, which the object dir's lstat covers. False means
   * "look properly" (a full `write`), never "wrong". Timestamps are taken at
   * nanosecond resolution on ext4, xfs, btrfs and tmpfs.
   */
  unchangedSince(dir: string, keys: Iterable<string>, deep: boolean): boolean {
    const stamp = this.stamps.get(dir);
    if (!stamp) return false;
    const dirStat = lstatOrUndefined(dir);
    if (!dirStat || !sameStat(stamp.dir, dirStat)) return false;
    if (!deep) return true;
    const payloadDir = lstatOrUndefined(path.join(dir, stamp.target));
    if (!payloadDir || !sameStat(stamp.payloadDir, payloadDir)) return false;
    const want = this.verified.get(dir);
    return want !== undefined && filesDigest(path.join(dir, stamp.target), stamp.target, keys) === want;
  }

  /** The deep part of step (1): the payload dir holds exactly these files, bytes, modes and owners. Returns its lstat when it does. */
  private filesMatch(dir: string, target: string, payload: Payload): Stats | undefined {
    const { fileMode, dirMode } = this.opts;
    const tsDir = path.join(dir, target);
    const tsStat = lstatOrUndefined(tsDir);
    if (!tsStat?.isDirectory() || !modeOwnerOk(tsStat, dirMode, this.opts)) return undefined;
    const files = readdirSync(tsDir);
    if (files.length !== payload.size || files.some((f) => !payload.has(f))) return undefined;
    const seen = filesDigest(tsDir, target, payload.keys(), (key, st) => st.size === payload.get(key)!.length && modeOwnerOk(st, fileMode, this.opts));
    if (seen === undefined) return undefined;
    if (this.verified.get(dir) === seen) return tsStat;
    for (const [key, want] of payload) if (!readFileNoFollow(path.join(tsDir, key)).equals(want)) return undefined;
    this.verified.set(dir, seen);
    return tsStat;
  }

  /** O_EXCL|O_NOFOLLOW create, write, mode, owner; the fsync waits in the thread pool. */
  private async writeFile(file: string, value: Buffer, durable: boolean): Promise<void> {
    const fd = openSync(file, CREATE_NEW, 0o600);
    try {
      for (let off = 0; off < value.length; ) off += writeSync(fd, value, off, value.length - off);
      fchmodSync(fd, this.opts.fileMode);
      if (this.opts.uid !== undefined || this.opts.gid !== undefined) fchownSync(fd, this.opts.uid ?? -1, this.opts.gid ?? -1);
      if (durable) await fsyncFd(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * What a change to an entry shows in its lstat: a new inode, content (mtime),
 * metadata (ctime, mode, owner, links). Kept as numbers for the resync's cheap
 * pass: comparing them is what a pass over 20,000 dirs does 20,000 times, and
 * formatting a string each time was a third of that pass's CPU.
 */
export type StatMark = readonly [number, number, number, number, number, number, number, number];

function statMark(st: Stats): StatMark {
  return [st.ino, st.size, st.mtimeMs, st.ctimeMs, st.mode, st.uid, st.gid, st.nlink];
}

function sameStat(m: StatMark, st: Stats): boolean {
  return m[0] === st.ino && m[1] === st.size && m[2] === st.mtimeMs && m[3] === st.ctimeMs && m[4] === st.mode && m[5] === st.uid && m[6] === st.gid && m[7] === st.nlink;
}

/** statMark as text, for a digest. */
function statKey(st: Stats): string {
  return statMark(st).join(':');
}

/** A digest of the payload dir's name and each file's lstat, in `keys` order; undefined when one is not a plain file or fails `ok`. */
function filesDigest(tsDir: string, target: string, keys: Iterable<string>, ok: (key: string, st: Stats) => boolean = () => true): string | undefined {
  const digest = createHash('sha1').update(target);
  for (const key of keys) {
    const st = lstatOrUndefined(path.join(tsDir, key));
    if (!st?.isFile() || !ok(key, st)) return undefined;
    digest.update(`\0${key}\0${statKey(st)}`);
  }
  return digest.digest('base64');
}

/**
 * Step (6) for one entry: a payload dir of ours holds only files (we never make
 * subdirs there), so unlink each and rmdir — two calls fewer per file than a
 * recursive rm, which lstats everything twice. Anything unexpected falls back to it.
 */
function removeOwnEntry(p: string, isDir: boolean): void {
  if (!isDir) return rmSync(p, { force: true });
  try {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      if (!e.isFile()) throw new Error('not a plain payload dir');
      unlinkSync(path.join(p, e.name));
    }
    rmdirSync(p);
  } catch {
    rmSync(p, { recursive: true, force: true });
  }
}

/**
 * Ours: the dir has a `..data` link — or it is what a crash mid-way leaves of
 * one (a first projection cut before its swap, a removal cut after unlinking
 * `..data`): non-empty, holding nothing but our payload dirs, temp link and key
 * links. Such leftovers can hold a deleted secret's plaintext, so they must be
 * listed (and so pruned) like any owned object. Anything else is not ours.
 * `knownDir`: the caller's readdir has just said `dir` is a real dir (FileSink.list).
 */
export function isOwned(dir: string, knownDir = false): boolean {
  if (!knownDir && !lstatOrUndefined(dir)?.isDirectory()) return false;
  if (lstatOrUndefined(path.join(dir, DATA))?.isSymbolicLink()) return true;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return false;
  }
  if (entries.length === 0) return false;
  for (const name of entries) {
    if (isPayloadDirName(name) || name === DATA_TMP || isKeyLink(dir, name)) continue;
    return false;
  }
  return true;
}

/** A user-visible link we made: `<name> -> ..data/<name>`. */
function isKeyLink(dir: string, name: string): boolean {
  return readlinkOrUndefined(path.join(dir, name)) === `${DATA}/${name}`;
}
