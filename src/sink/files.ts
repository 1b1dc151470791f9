/**
 * The file sink: kubelet-style projection of each object into its own directory.
 *
 *   <root>/configmaps/<namespace>/<name>/<key>
 *   <secretsRoot>/<namespace>/<name>/<key>          (secretsRoot defaults to <root>/secrets)
 *
 * Inside an object directory every name starting with `..` is ours:
 *
 *   ..2024_05_01_12_00_00_123.Ab3dEf/<key>   the payload: one timestamped dir per version
 *   ..data -> ..2024_05_01_12_00_00_123.Ab3dEf
 *   <key>  -> ..data/<key>                    what users open
 *
 * A reader opening `<key>` resolves `..data` once, so it gets a whole file of
 * either the old or the new version; a reader that resolves `..data` once and
 * opens every key below it sees one consistent set. A `..data` symlink is the
 * ownership marker: `list` and `remove` never touch a directory without one.
 *
 * apply(obj), serialized per object id:
 *  (1) Validate namespace, name and every key; an invalid one throws before
 *      anything is written (see files-paths.ts).
 *  (2) Read the current payload through `..data`: file names, bytes, modes and
 *      owners, plus the object dir itself and every `<key>` link. If all equal
 *      the desired state and nothing stale is left, return 'unchanged' having
 *      written nothing. A directory without `..data` is adopted only if it holds
 *      nothing but our own leftovers (a crash before the first swap).
 *  (3) Create the parent dirs, then a fresh `..<timestamp>.<random>` dir
 *      (mkdtemp); write each file (write, chmod, chown, fsync), fsync the dir.
 *  (4) Point a temporary link `..data_tmp` at the new dir (relative) and rename
 *      it over `..data`: the atomic swap. fsync the object dir.
 *  (5) Create or repair `<key> -> ..data/<key>` for every key, via a temporary
 *      link renamed over the old entry so a wrong entry is replaced atomically.
 *  (6) Remove `<key>` links (links into `..data/`) for keys no longer desired.
 *  (7) Remove every other `..`-prefixed entry: old timestamped dirs, leftovers.
 *
 * remove(id): project an empty payload (steps 3-7, so every key disappears at
 * once), unlink `..data`, delete the directory, then the namespace dir if empty.
 * A crash at any point leaves either an owned dir that the next prune removes
 * again, or an empty unowned one that the next apply adopts.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, rmdir, stat, symlink, chmod, chown } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { objectId, type DesiredObject, type ObjectId, type ObjectKind } from '../desired/types.js';
import { InvalidInput, UserError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ApplyResult, Sink } from './types.js';
import { isWithin, keyProblem, segmentProblem } from './files-paths.js';
import { startDriftWatch, type DriftWatch } from './files-drift.js';

export { keyProblem, segmentProblem, validateKey, validatePathSegment, warnIfPersistent } from './files-paths.js';

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
}

const DATA = '..data';
const DATA_TMP = '..data_tmp';
/** What `..data` may point at: one of our timestamped dirs, never a path. */
const TS_DIR = /^\.\.\d{4}_[-_.A-Za-z0-9]+$/;
/** Events for an id this long after its apply ended are taken to be our own. */
const QUIET_MS = 150;

export class FileSink implements Sink {
  readonly name = 'files';
  readonly root: string;
  readonly secretsRoot: string;
  private readonly kindRoots: Record<ObjectKind, string>;
  private readonly modes: Record<ObjectKind, { file: number; dir: number }>;
  private readonly locks = new Map<ObjectId, Promise<void>>();
  private readonly busy = new Map<ObjectId, number>();
  private readonly quietUntil = new Map<ObjectId, number>();
  private drift?: DriftWatch;

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
  }

  async apply(obj: DesiredObject): Promise<ApplyResult> {
    const dir = this.validatedDir(obj); // (1)
    return this.exclusive(obj.id, async () => {
      const result = await this.project(obj.id, obj.kind, dir, obj.data);
      if (result === 'written') this.opts.logger.debug({ id: obj.id, keys: obj.data.size, revision: obj.revision }, 'files projected');
      return result;
    });
  }

  /** The object's directory, after checking every name and key stays inside the root. */
  private validatedDir(obj: DesiredObject): string {
    const dir = this.objectDir(obj.id, obj.kind, obj.namespace, obj.name);
    for (const key of obj.data.keys()) {
      const problem = keyProblem(key);
      if (problem) throw new InvalidInput(obj.id, `invalid key ${JSON.stringify(key)}: ${problem}`);
    }
    return dir;
  }

  /** What `apply` would do, writing nothing (for `confsync plan`). */
  async plan(obj: DesiredObject): Promise<'create' | 'update' | 'unchanged'> {
    const dir = this.validatedDir(obj);
    if (!(await isOwned(dir))) return 'create';
    return (await this.isUpToDate(obj.id, dir, this.modes[obj.kind], obj.data)) ? 'unchanged' : 'update';
  }

  async remove(id: ObjectId): Promise<void> {
    const [kind, namespace, name] = id.split('/') as [ObjectKind, string, string];
    const dir = this.objectDir(id, kind, namespace, name);
    await this.exclusive(id, async () => {
      if (!(await isOwned(dir))) return;
      await this.project(id, kind, dir, new Map());
      await rm(path.join(dir, DATA), { force: true });
      await rm(dir, { recursive: true, force: true });
      await rmdir(path.dirname(dir)).catch(() => undefined); // fails when not empty: fine
      this.opts.logger.debug({ id }, 'files removed');
    });
  }

  async list(): Promise<ObjectId[]> {
    const ids: ObjectId[] = [];
    for (const kind of ['configmaps', 'secrets'] as const) {
      for (const ns of await subdirs(this.kindRoots[kind])) {
        for (const name of await subdirs(path.join(this.kindRoots[kind], ns))) {
          if (await isOwned(path.join(this.kindRoots[kind], ns, name))) ids.push(objectId(kind, ns, name));
        }
      }
    }
    return ids.sort();
  }

  async watchDrift(onDrift: (id: ObjectId) => void): Promise<void> {
    await this.drift?.close();
    await this.ensureKindRoot('configmaps');
    await this.ensureKindRoot('secrets');
    this.drift = await startDriftWatch({
      roots: (['configmaps', 'secrets'] as const).map((kind) => ({ kind, dir: this.kindRoots[kind] })),
      onDrift,
      isQuiet: (id) => (this.busy.get(id) ?? 0) > 0 || Date.now() < (this.quietUntil.get(id) ?? 0),
      logger: this.opts.logger,
    });
  }

  async close(): Promise<void> {
    await this.drift?.close();
    this.drift = undefined;
    await Promise.all(this.locks.values()); // no write lands after close resolves
  }

  /** `<kindRoot>/<ns>/<name>`, after checking that the id is well-formed (1). */
  private objectDir(id: ObjectId, kind: ObjectKind, namespace: string, name: string): string {
    if (kind !== 'configmaps' && kind !== 'secrets') throw new InvalidInput(JSON.stringify(id), `unknown kind`);
    for (const [what, segment] of [['namespace', namespace], ['name', name]] as const) {
      const problem = segment === undefined ? 'is missing' : segmentProblem(segment);
      if (problem) throw new InvalidInput(JSON.stringify(id), `invalid ${what} ${JSON.stringify(segment)}: ${problem}`);
    }
    if (id !== objectId(kind, namespace, name)) throw new InvalidInput(JSON.stringify(id), 'id does not match kind/namespace/name');
    const dir = path.join(this.kindRoots[kind], namespace, name);
    // Defence in depth: the checks above already make this impossible.
    if (path.dirname(path.dirname(dir)) !== this.kindRoots[kind]) throw new InvalidInput(id, 'object dir escapes the root');
    return dir;
  }

  private async project(id: ObjectId, kind: ObjectKind, dir: string, data: Map<string, Buffer>): Promise<ApplyResult> {
    const modes = this.modes[kind];
    if (await this.isUpToDate(id, dir, modes, data)) return 'unchanged'; // (2)

    // (3)
    await this.ensureKindRoot(kind);
    await this.ensureDir(path.dirname(dir), modes.dir);
    await this.ensureDir(dir, modes.dir);
    await this.setModeOwner(dir, modes.dir);
    const tsDir = await mkdtemp(path.join(dir, `..${stamp(this.opts.now?.() ?? new Date())}.`));
    try {
      await this.setModeOwner(tsDir, modes.dir);
      // allSettled: no write may still be running when the catch below removes the dir.
      const writes = await Promise.allSettled([...data].map(([key, value]) => this.writeFile(path.join(tsDir, key), value, modes.file)));
      const failed = writes.find((w) => w.status === 'rejected');
      if (failed) throw failed.reason;
      await fsyncDir(tsDir);
    } catch (err) {
      await rm(tsDir, { recursive: true, force: true });
      throw err;
    }
    const tsName = path.basename(tsDir);

    // (4)
    const dataLink = path.join(dir, DATA);
    if (!(await lstatOrUndefined(dataLink))?.isSymbolicLink()) await rm(dataLink, { recursive: true, force: true });
    await rm(path.join(dir, DATA_TMP), { force: true });
    await symlink(tsName, path.join(dir, DATA_TMP));
    await rename(path.join(dir, DATA_TMP), dataLink);
    await fsyncDir(dir);

    // (5)
    for (const key of data.keys()) {
      if ((await readlinkOrUndefined(path.join(dir, key))) === `${DATA}/${key}`) continue;
      const tmp = path.join(dir, `..link_tmp.${randomBytes(6).toString('hex')}`);
      await symlink(`${DATA}/${key}`, tmp);
      await rename(tmp, path.join(dir, key)).catch(async (err: unknown) => {
        await rm(tmp, { force: true });
        throw new Error(`${id}: cannot place key ${JSON.stringify(key)}: a foreign entry is in the way`, { cause: err });
      });
    }

    // (6) and (7)
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.name === DATA || entry.name === tsName || data.has(entry.name)) continue;
      if (entry.name.startsWith('..')) {
        await rm(path.join(dir, entry.name), { recursive: true, force: true }); // (7)
      } else if (await isKeyLink(dir, entry.name)) {
        await rm(path.join(dir, entry.name), { force: true }); // (6)
      }
    }
    return 'written';
  }

  /** Step (2): true only when the directory is exactly the desired state. */
  private async isUpToDate(id: ObjectId, dir: string, modes: { file: number; dir: number }, data: Map<string, Buffer>): Promise<boolean> {
    const dirStat = await lstatOrUndefined(dir);
    if (!dirStat) return false;
    if (!dirStat.isDirectory()) throw new Error(`${id}: ${dir} exists and is not a directory`);
    const entries = await readdir(dir, { withFileTypes: true });
    const target = await readlinkOrUndefined(path.join(dir, DATA));
    if (target === undefined) {
      for (const e of entries) {
        if (!e.name.startsWith('..') && !(await isKeyLink(dir, e.name))) {
          throw new Error(`${id}: ${dir} exists and is not managed by confsync (no ${DATA}); refusing to write into it`);
        }
      }
      return false;
    }
    if (!this.modeOwnerOk(dirStat, modes.dir)) return false;
    if (!TS_DIR.test(target)) return false; // hand-made or foreign target: replace it

    const tsDir = path.join(dir, target);
    const tsStat = await lstatOrUndefined(tsDir);
    if (!tsStat?.isDirectory() || !this.modeOwnerOk(tsStat, modes.dir)) return false;
    const files = await readdir(tsDir);
    if (files.length !== data.size || files.some((f) => !data.has(f))) return false;
    const filesOk = await Promise.all(
      [...data].map(async ([key, want]) => {
        const st = await lstatOrUndefined(path.join(tsDir, key));
        if (!st?.isFile() || st.size !== want.length || !this.modeOwnerOk(st, modes.file)) return false;
        return (await readFile(path.join(tsDir, key))).equals(want);
      }),
    );
    if (filesOk.includes(false)) return false;

    for (const e of entries) {
      if (e.name === DATA || e.name === target) continue;
      if (e.name.startsWith('..')) return false; // stale ts dir or temp link: (7) has work
      const isLink = await isKeyLink(dir, e.name);
      if (data.has(e.name) ? !isLink : isLink) return false; // (5) or (6) has work
    }
    return [...data.keys()].every((k) => entries.some((e) => e.name === k));
  }

  private modeOwnerOk(st: Stats, mode: number): boolean {
    const { uid, gid } = this.opts;
    return (st.mode & 0o7777) === mode && (uid === undefined || st.uid === uid) && (gid === undefined || st.gid === gid);
  }

  private async setModeOwner(p: string, mode: number): Promise<void> {
    await chmod(p, mode); // explicit: mkdir/mkdtemp modes are filtered by the umask
    if (this.opts.uid !== undefined || this.opts.gid !== undefined) await chown(p, this.opts.uid ?? -1, this.opts.gid ?? -1);
  }

  private async writeFile(file: string, value: Buffer, mode: number): Promise<void> {
    const fh = await open(file, 'wx', 0o600);
    try {
      await fh.writeFile(value);
      await fh.chmod(mode);
      if (this.opts.uid !== undefined || this.opts.gid !== undefined) await fh.chown(this.opts.uid ?? -1, this.opts.gid ?? -1);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /**
   * The kind root and what is above it. Parents get the config dir mode: they
   * only need to be traversable. An operator may make the kind root a link.
   */
  private async ensureKindRoot(kind: ObjectKind): Promise<void> {
    const kindRoot = this.kindRoots[kind];
    await mkdir(path.dirname(kindRoot), { recursive: true, mode: this.modes.configmaps.dir });
    await this.ensureDir(kindRoot, this.modes[kind].dir, true);
  }

  /**
   * mkdir one level; a new dir gets mode and owner. Below the kind root an
   * existing entry must be a real dir: a hand-made link must not lead writes
   * out of the root.
   */
  private async ensureDir(dir: string, mode: number, followLinks = false): Promise<void> {
    try {
      await mkdir(dir, { mode });
      await this.setModeOwner(dir, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const st = followLinks ? await stat(dir) : await lstat(dir);
      if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory${followLinks ? '' : ' (links are not followed)'}`);
    }
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

/** `2024_05_01_12_00_00_123` (UTC), like kubelet's `..2006_01_02_15_04_05.` prefix. */
function stamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}_${p(d.getUTCMonth() + 1)}_${p(d.getUTCDate())}_${p(d.getUTCHours())}_${p(d.getUTCMinutes())}_${p(d.getUTCSeconds())}_${p(d.getUTCMilliseconds(), 3)}`;
}

/**
 * Ours: the dir has a `..data` link — or it is what a crash mid-way leaves of
 * one (a first projection cut before its swap, a removal cut after unlinking
 * `..data`): non-empty, holding nothing but our payload dirs, temp link and key
 * links. Such leftovers can hold a deleted secret's plaintext, so they must be
 * listed (and so pruned) like any owned object. Anything else is not ours.
 */
async function isOwned(dir: string): Promise<boolean> {
  const st = await lstatOrUndefined(dir);
  if (!st?.isDirectory()) return false;
  if ((await lstatOrUndefined(path.join(dir, DATA)))?.isSymbolicLink()) return true;
  const entries = await readdir(dir).catch(() => [] as string[]);
  if (entries.length === 0) return false;
  for (const name of entries) {
    if (TS_DIR.test(name) || name === DATA_TMP || (await isKeyLink(dir, name))) continue;
    return false;
  }
  return true;
}

/** A user-visible link we made: `<name> -> ..data/<name>`. */
async function isKeyLink(dir: string, name: string): Promise<boolean> {
  return (await readlinkOrUndefined(path.join(dir, name))) === `${DATA}/${name}`;
}

/** Names of real subdirectories that could be a namespace or object name. */
async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw err;
  });
  return entries.filter((e) => e.isDirectory() && !segmentProblem(e.name)).map((e) => e.name);
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  return lstat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
}

/** The link's target, or undefined when `p` is absent or not a link. */
async function readlinkOrUndefined(p: string): Promise<string | undefined> {
  return readlink(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'EINVAL' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
