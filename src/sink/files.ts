/**
 * The file sink: kubelet-style projection of each object into its own directory.
 *
 *   <root>/configmaps/<namespace>/<name>/<key>
 *   <secretsRoot>/<namespace>/<name>/<key>          (secretsRoot defaults to <root>/secrets)
 *
 * What goes inside an object directory, and how it is swapped atomically, is
 * the AtomicWriter's business (atomic-writer.ts). This class owns the layout
 * (kind roots, namespace and object dirs), the modes and owner per kind, the
 * per-object locks, list/remove (owned dirs only: see `isOwned`) and the drift
 * watch (files-drift.ts).
 *
 * No link below a kind root is ever followed (fs-safe.ts): the kind root is
 * resolved once (an operator may make it a link before start), and from then on
 * it, the namespace dir and the object dir are lstat-ed before every read, write
 * or removal; a link where one of them should be is refused with an error
 * naming its path. `list` never descends through a link. A kind root or
 * namespace dir that is group- or world-writable (beyond the configured mode) is
 * chmod-ed back with a warning: whoever can write there could swap in a link.
 *
 * apply(obj), serialized per object id:
 *  (1) Validate namespace, name and every key; an invalid one throws before
 *      anything is written (see files-paths.ts).
 *  (2) Check that kind root, namespace and object dir are real dirs or absent.
 *  (3) Hand the payload to the kind's AtomicWriter; only when it has something
 *      to write are the kind root and the namespace dir created (and their
 *      modes fixed). In bulk (the first full sync), the writes in flight share
 *      one file-system-wide sync before their swaps and one after (sync-batch.ts)
 *      instead of three fsyncs each; a single change fsyncs its own files. The first apply of an id in this process trusts the
 *      content hash in the payload dir's name (a restart re-checks every object
 *      without reading a file); every later one (resync, drift hint, retry)
 *      also compares the files, so an in-place edit is restored then.
 *
 * remove(id): the writer empties and deletes the object dir, then the
 * namespace dir goes if it is empty.
 *
 * Stamps (`stampsFile`, the daemon's `<stateDir>/files-stamps.json`, 0600): at
 * close the writers' stamps — each object dir's lstat when last found or left up
 * to date, and its `..data` target — are saved; the first apply after a start
 * reads them (and removes the file), and each object's first quick check rests on
 * its stamp when the dir's lstat still matches (atomic-writer.ts (1)): a restart
 * checks 20,000 objects with an lstat each, not a readdir and a readlink per key.
 * A missing, unreadable or malformed file costs only that: every dir is checked
 * in full, as before.
 */
import { chmod, lstat, mkdir, readdir, readFile, realpath, rm, rmdir } from 'node:fs/promises';
import { lstatSync, statfsSync, type Stats } from 'node:fs';
import path from 'node:path';
import { type DesiredObject } from '../desired/types.js';
import { objectId, type ObjectId, type ObjectKind } from '../keyspace.js';
import { UserError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ApplyOptions, ApplyResult, Sink } from './types.js';
import { SyncBatch } from './sync-batch.js';
import { isWithin, segmentProblem, validateObject } from './files-paths.js';
import { startDriftWatch, type DriftWatch } from './files-drift.js';
import { writeDurably } from '../state/durable-file.js';
import { AtomicWriter, isOwned, type SavedStamp } from './atomic-writer.js';
import { checkRealDirs, ensureDir } from './fs-safe.js';

export { keyProblem, segmentProblem, warnIfPersistent } from './files-paths.js';

export interface FileSinkOptions {
  root: string;
  /** Defaults to `<root>/secrets`; belongs on tmpfs. */
  secretsRoot?: string;
  configFileMode?: number;
  configDirMode?: number;
  secretFileMode?: number;
  secretDirMode?: number;
  uid?: number;
  gid?: number;
  logger: Logger;
  /** Clock for the timestamped dir names (tests). */
  now?: () => Date;
  /** Where the stamps are kept across a restart (see the header); none: every start checks every dir in full. */
  stampsFile?: string;
}

/** A stamps file larger than this is not read (20,000 objects take ~4 MB). */
const MAX_STAMPS_BYTES = 64 << 20;

/** Events for an id this long after its apply ended are taken to be our own. */
const QUIET_MS = 150;
const KINDS = ['configmaps', 'secrets'] as const;
/** statfs(2) f_type of the RAM filesystems, where fsync is a no-op. */
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
/** Objects checked per event-loop turn by `suspects` (~2 ms of lstats on a local disk). */
const SWEEP_SLICE = 128;

export class FileSink implements Sink {
  readonly name = 'files';
  readonly root: string;
  readonly secretsRoot: string;
  private readonly kindRoots: Record<ObjectKind, string>;
  private readonly modes: Record<ObjectKind, { file: number; dir: number }>;
  private readonly writers: Record<ObjectKind, AtomicWriter>;
  /** Kind roots with links above them resolved, once they exist. */
  private readonly resolved = new Map<ObjectKind, string>();
  /** Kind roots on tmpfs (no fsync needed), once known. */
  private readonly volatile = new Map<ObjectKind, boolean>();
  /** Per file system (st_dev): the sync that a first full sync's writes share. */
  private readonly batches = new Map<number, SyncBatch>();
  private noSyncfs = false;
  /** Ids applied at least once by this process: their next apply compares file bytes too. */
  private readonly seen = new Set<ObjectId>();
  /** Id -> the hash of the desired object its last apply left in place. */
  private readonly applied = new Map<ObjectId, string>();
  private readonly locks = new Map<ObjectId, Promise<void>>();
  private readonly busy = new Map<ObjectId, number>();
  private readonly quietUntil = new Map<ObjectId, number>();
  private drift?: DriftWatch;
  private stampsLoaded?: Promise<void>;
  readonly driftFrom = 'firstSync';
  readonly stableListing = true;
  private closed = false;

  constructor(private readonly opts: FileSinkOptions) {
    this.root = path.resolve(opts.root);
    this.secretsRoot = path.resolve(opts.secretsRoot ?? path.join(this.root, 'secrets'));
    this.kindRoots = { configmaps: path.join(this.root, 'configmaps'), secrets: this.secretsRoot };
    const { configmaps, secrets } = this.kindRoots;
    if (isWithin(configmaps, secrets) || isWithin(secrets, configmaps)) {
      throw new UserError(`sinks.files: secretsRoot ${secrets} overlaps the configmaps dir ${configmaps}`);
    }
    this.modes = {
      configmaps: { file: opts.configFileMode ?? 0o644, dir: opts.configDirMode ?? 0o755 },
      secrets: { file: opts.secretFileMode ?? 0o400, dir: opts.secretDirMode ?? 0o700 },
    };
    const writer = (kind: ObjectKind) =>
      new AtomicWriter({ fileMode: this.modes[kind].file, dirMode: this.modes[kind].dir, uid: opts.uid, gid: opts.gid, now: opts.now });
    this.writers = { configmaps: writer('configmaps'), secrets: writer('secrets') };
  }

  async apply(obj: DesiredObject, how: ApplyOptions = {}): Promise<ApplyResult> {
    validateObject(obj.id, obj.kind, obj.namespace, obj.name, obj.data.keys()); // (1)
    if (this.opts.stampsFile) await (this.stampsLoaded ??= this.loadStamps(this.opts.stampsFile));
    return this.exclusive(obj.id, async () => {
      const { dir, found } = await this.checkedDir(obj.kind, obj.namespace, obj.name); // (2)
      const volatile = this.onTmpfs(obj.kind);
      const result = await this.writers[obj.kind].write(dir, obj.data, {
        deep: this.seen.has(obj.id),
        absent: found.length < 3,
        ensureParent: () => this.ensureParents(obj.kind, dir, found),
        volatile,
        dirStat: found[2],
        durable: how.bulk && !volatile && !this.noSyncfs ? this.sharedSync(obj.kind, dir) : undefined,
      }); // (3)
      this.seen.add(obj.id);
      this.applied.set(obj.id, obj.hash);
      if (result === 'written') this.opts.logger.debug({ id: obj.id, keys: obj.data.size, revision: obj.revision }, 'files projected');
      return result;
    });
  }

  /**
   * Sink.prepare: an update of an object dir this process applied writes its new
   * payload dir now and swaps nothing (AtomicWriter.prepare); the apply that
   * follows only swaps. Not for a create (its dir would appear early) nor while
   * another operation on the object is under way.
   */
  async prepare(obj: DesiredObject): Promise<void> {
    if (this.closed || this.locks.has(obj.id) || this.applied.get(obj.id) === undefined || this.applied.get(obj.id) === obj.hash) return;
    try {
      validateObject(obj.id, obj.kind, obj.namespace, obj.name, obj.data.keys());
      await this.exclusive(obj.id, async () => {
        const { dir, found } = await this.checkedDir(obj.kind, obj.namespace, obj.name);
        if (found.length < 3) return;
        await this.writers[obj.kind].prepare(dir, obj.data, { volatile: this.onTmpfs(obj.kind), dirStat: found[2] });
      });
    } catch (err) {
      this.opts.logger.debug({ id: obj.id, err: (err as Error).message }, 'files: update not prepared ahead (the apply writes it)');
    }
  }

  /** Updates prepared ahead (`prepare`) that their apply swapped in, and that were thrown away. */
  preparedCounts(): { swapped: number; discarded: number } {
    const [a, b] = [this.writers.configmaps.preparedCounts, this.writers.secrets.preparedCounts];
    return { swapped: a.swapped + b.swapped, discarded: a.discarded + b.discarded };
  }

  discard(id: ObjectId): void {
    const [kind, namespace, name] = id.split('/') as [ObjectKind, string, string];
    if (!this.writers[kind]) return;
    void this.exclusive(id, async () => {
      const { dir } = await this.checkedDir(kind, namespace, name);
      await this.writers[kind].discardPrepared(dir);
    }).catch((err: Error) => this.opts.logger.debug({ id, err: err.message }, 'files: a prepared update not removed (the next write of the object removes it)'));
  }

  /** What `apply` would do, writing nothing (for `confsync plan`). */
  async plan(obj: DesiredObject): Promise<'create' | 'update' | 'unchanged'> {
    validateObject(obj.id, obj.kind, obj.namespace, obj.name, obj.data.keys());
    const { dir } = await this.checkedDir(obj.kind, obj.namespace, obj.name);
    if (!isOwned(dir)) return 'create';
    return this.writers[obj.kind].isUpToDate(dir, obj.data) ? 'unchanged' : 'update';
  }

  async remove(id: ObjectId): Promise<void> {
    const [kind, namespace, name] = id.split('/') as [ObjectKind, string, string];
    validateObject(id, kind, namespace, name);
    await this.exclusive(id, async () => {
      const { dir } = await this.checkedDir(kind, namespace, name);
      this.seen.delete(id);
      this.applied.delete(id);
      if (!isOwned(dir)) return;
      await this.writers[kind].clear(dir);
      await rmdir(path.dirname(dir)).catch(() => undefined); // fails when not empty: fine
      this.opts.logger.debug({ id }, 'files removed');
    });
  }

  async list(): Promise<ObjectId[]> {
    const ids: ObjectId[] = [];
    for (const kind of KINDS) {
      const root = await this.kindRoot(kind);
      if (checkRealDirs(root, []).length === 0) continue;
      // subdirs() keeps real dirs only: list never descends through a link.
      for (const ns of await subdirs(root)) {
        for (const name of await subdirs(path.join(root, ns))) {
          if (isOwned(path.join(root, ns, name), true)) ids.push(objectId(kind, ns, name));
        }
      }
    }
    return ids.sort();
  }

  /**
   * The resync's cheap pass (Sink.suspects): per object one lstat (the object
   * dir) against what the writer saw when it last found the object up to date;
   * `deep`: also the payload dir's and each file's. Synchronous calls in slices, so a put waits
   * at most one slice. An object whose apply is in flight, whose desired hash is
   * not the one applied, or that was never found up to date is a suspect.
   */
  async suspects(objects: Iterable<DesiredObject>, deep: boolean): Promise<ObjectId[]> {
    const out: ObjectId[] = [];
    let n = 0;
    for (const obj of objects) {
      const root = this.resolved.get(obj.kind);
      const ok =
        root !== undefined &&
        this.applied.get(obj.id) === obj.hash &&
        !this.locks.has(obj.id) &&
        this.writers[obj.kind].unchangedSince(path.join(root, obj.namespace, obj.name), obj.data.keys(), deep);
      if (!ok) out.push(obj.id);
      if (++n % SWEEP_SLICE === 0) await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  async watchDrift(onDrift: (id: ObjectId) => void): Promise<void> {
    await this.drift?.close();
    for (const kind of KINDS) await this.ensureKindRoot(kind);
    const drift = await startDriftWatch({
      roots: await Promise.all(KINDS.map(async (kind) => ({ kind, dir: await this.kindRoot(kind) }))),
      onDrift,
      isQuiet: (id) => (this.busy.get(id) ?? 0) > 0 || Date.now() < (this.quietUntil.get(id) ?? 0),
      objectsIn: (kind, namespace) => {
        const prefix = `${kind}/${namespace === undefined ? '' : `${namespace}/`}`;
        return [...this.applied.keys()].filter((id) => id.startsWith(prefix));
      },
      logger: this.opts.logger,
    });
    // Closed while chokidar was still scanning: a watcher left open would keep the process alive.
    if (this.closed) return drift.close();
    this.drift = drift;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.drift?.close();
    this.drift = undefined;
    await Promise.all(this.locks.values()); // no write lands after close resolves
    if (this.opts.stampsFile) await this.saveStamps(this.opts.stampsFile);
  }

  /** The stamps a previous process saved, handed to the writers once; the file is removed (a stamp is good for one start). */
  private async loadStamps(file: string): Promise<void> {
    let text: string;
    try {
      const bytes = await readFile(file);
      await rm(file, { force: true });
      if (bytes.length > MAX_STAMPS_BYTES) throw new Error(`larger than ${MAX_STAMPS_BYTES >> 20} MiB`);
      text = bytes.toString('utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.logger.warn({ file, err: (err as Error).message }, 'file stamps not read; every object dir is checked in full at this start');
      return;
    }
    let saved: unknown;
    try {
      saved = JSON.parse(text);
    } catch {
      saved = undefined;
    }
    const o = saved as { v?: unknown } & Partial<Record<ObjectKind, unknown>>;
    if (o?.v !== 1 || !KINDS.every((k) => Array.isArray(o[k]) && (o[k] as unknown[]).every(isSavedStamp))) {
      this.opts.logger.warn({ file }, 'file stamps malformed; ignored, every object dir is checked in full at this start');
      return;
    }
    for (const kind of KINDS) this.writers[kind].carry(o[kind] as SavedStamp[]);
  }

  private async saveStamps(file: string): Promise<void> {
    const saved = { v: 1, configmaps: this.writers.configmaps.savedStamps(), secrets: this.writers.secrets.savedStamps() };
    try {
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeDurably(file, JSON.stringify(saved));
    } catch (err) {
      this.opts.logger.warn({ file, code: (err as NodeJS.ErrnoException).code, err: (err as Error).message }, 'file stamps not saved; the next start checks every object dir in full');
    }
  }

  /**
   * (3) in bulk: the writer's `durable` for object dir `dir`, called before and
   * after its swap: each call waits for a sync of the file system holding `dir`
   * shared with the other writes in flight (sync-batch.ts). The dir exists by the
   * first call (the writer made its payload dir in it); its file system is looked
   * up once. Where `sync -f` cannot run, this write fails once (retried) and every
   * later one fsyncs its own files.
   */
  private sharedSync(kind: ObjectKind, dir: string): () => Promise<void> {
    let batch: SyncBatch | undefined;
    return () => this.waitForSync((batch ??= this.batchFor(kind, dir)));
  }

  private batchFor(kind: ObjectKind, dir: string): SyncBatch {
    const dev = lstatSync(dir).dev;
    let batch = this.batches.get(dev);
    if (!batch) {
      // The kind root, which no removal takes away, unless a mount sits between it and the object.
      const root = this.resolved.get(kind);
      batch = new SyncBatch(root !== undefined && lstatSync(root).dev === dev ? root : path.dirname(dir));
      this.batches.set(dev, batch);
    }
    return batch;
  }

  private async waitForSync(batch: SyncBatch): Promise<void> {
    try {
      await batch.sync();
    } catch (err) {
      if (batch.unavailable && !this.noSyncfs) {
        this.noSyncfs = true;
        this.opts.logger.warn({ reason: batch.unavailable }, 'file sink: no file-system-wide sync for the first full sync; each file is fsynced instead (slower)');
      }
      throw err;
    }
  }

  /** Step (2): `<kindRoot>/<ns>/<name>`; throws when any of the three exists but is not a real dir. */
  private async checkedDir(kind: ObjectKind, namespace: string, name: string): Promise<{ dir: string; found: Stats[] }> {
    const root = await this.kindRoot(kind);
    const found = checkRealDirs(root, [namespace, name]);
    return { dir: path.join(root, namespace, name), found };
  }

  /** Is the kind root on a RAM filesystem (the secrets root belongs on one)? Asked once it exists. */
  private onTmpfs(kind: ObjectKind): boolean {
    const known = this.volatile.get(kind);
    if (known !== undefined) return known;
    const root = this.resolved.get(kind);
    if (root === undefined) return false;
    let type: number;
    try {
      type = statfsSync(root).type;
    } catch {
      return false;
    }
    const ram = type === TMPFS_MAGIC || type === RAMFS_MAGIC;
    this.volatile.set(kind, ram);
    return ram;
  }

  /** The kind root, resolved through links above it (and the configured one itself) once it exists. */
  private async kindRoot(kind: ObjectKind): Promise<string> {
    const known = this.resolved.get(kind);
    if (known) return known;
    const configured = this.kindRoots[kind];
    const real = await realpath(configured).catch(() => undefined);
    if (real === undefined) return configured;
    this.resolved.set(kind, real);
    return real;
  }

  /** The kind root and the namespace dir above an object dir; `found`: their lstat from step (2). */
  private async ensureParents(kind: ObjectKind, dir: string, found: Stats[]): Promise<void> {
    const mode = this.modes[kind].dir;
    if (found[0]) await this.fixLoose(path.dirname(path.dirname(dir)), found[0], mode);
    else await this.ensureKindRoot(kind);
    if (found[1]) await this.fixLoose(path.dirname(dir), found[1], mode);
    else if (!ensureDir(path.dirname(dir), mode, this.opts)) await this.fixLoose(path.dirname(dir), await lstat(path.dirname(dir)), mode);
  }

  /**
   * The kind root and what is above it. Parents get the config dir mode: they
   * only need to be traversable.
   */
  private async ensureKindRoot(kind: ObjectKind): Promise<void> {
    const root = await this.kindRoot(kind);
    const mode = this.modes[kind].dir;
    await mkdir(path.dirname(root), { recursive: true, mode: this.modes.configmaps.dir });
    if (!ensureDir(root, mode, this.opts)) await this.fixLoose(root, await lstat(root), mode);
    await this.kindRoot(kind); // resolve now that it exists
  }

  /** A dir below the roots that is writable beyond `mode` gets `mode`: whoever can write there could swap in a link. */
  private async fixLoose(dir: string, st: Stats, mode: number): Promise<void> {
    if ((st.mode & 0o022 & ~mode) === 0) return;
    await chmod(dir, mode);
    this.opts.logger.warn({ dir, was: (st.mode & 0o7777).toString(8), now: mode.toString(8) }, 'file sink: directory was group/world-writable; mode fixed');
  }

  /** Runs `fn` after every earlier operation on `id`; marks the id quiet for drift meanwhile. */
  private async exclusive<T>(id: ObjectId, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => done);
    this.locks.set(id, tail);
    this.busy.set(id, (this.busy.get(id) ?? 0) + 1);
    try {
      await previous;
      return await fn();
    } finally {
      release();
      this.quietUntil.set(id, Date.now() + QUIET_MS);
      const left = (this.busy.get(id) ?? 1) - 1;
      if (left > 0) this.busy.set(id, left);
      else this.busy.delete(id);
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }
}

/** Names of real subdirectories that could be a namespace or object name. */
async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw err;
  });
  return entries.filter((e) => e.isDirectory() && !segmentProblem(e.name)).map((e) => e.name);
}

function isSavedStamp(e: unknown): e is SavedStamp {
  const mark = (m: unknown) => Array.isArray(m) && m.length === 8 && m.every((n) => typeof n === 'number' && Number.isFinite(n));
  return Array.isArray(e) && e.length === 4 && typeof e[0] === 'string' && typeof e[1] === 'string' && mark(e[2]) && mark(e[3]);
}
