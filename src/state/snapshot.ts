/**
 * The encrypted local snapshot, `<stateDir>/snapshot` (file 0600, dir 0700):
 * what this daemon applied — the keys as etcd holds them (secrets still sealed),
 * their revision, the replay high-water marks — sealed to its own identity
 * (snapshot-format.ts). At start it lets the daemon serve while etcd is down and
 * resume the watch without a full list (source/etcd.ts).
 *
 * Writing, after applied batches:
 *  (1) changed() notes that the applied state moved; a write starts at once when
 *      the last one is `minIntervalMs` old (config snapshotIntervalSeconds,
 *      default 10 s), else when it is: at most one write per interval, whatever
 *      the rate of puts. A write re-seals the whole state (its cost grows with the
 *      keyspace, ~0.3 s of CPU at 10,000 objects × 11 keys), so the interval
 *      bounds what the snapshot costs, and how stale it may be: a crash or an
 *      offline start finds the state of at most one interval (plus a write) ago.
 *      Keys and marks are taken at one moment (take()), so no mark is above the
 *      sealed version the snapshot's keys hold (a start never refuses its own
 *      snapshot's secrets as replays); a start from it reconciles everything
 *      against it, and the watch resumes at its revision;
 *  (2) write(): take() the keys, revision and marks; encode and seal them a
 *      slice at a time, the event loop getting a turn between slices; each key's
 *      JSON is built once and reused while the key is unchanged (FragmentCache);
 *  (3) write `snapshot.tmp-<pid>` (0600), fsync, rename over `snapshot`, fsync the
 *      dir: a crash leaves the old file or the new one, never half of one;
 *  (4) a failed write is retried 30 s later (or at the next change); one warning;
 *  (5) close() writes what is pending.
 * A daemon without an identity keeps no snapshot: nothing to seal it to.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Keyring } from '../envelope/identity.js';
import type { Logger } from '../log.js';
import type { Kv, SourceEvent } from '../source/types.js';
import { writeDurably } from './durable-file.js';
import { SNAPSHOT_FILE } from './location.js';
import { decodeSnapshot, encodeSnapshotAsync, SnapshotUnusable, type FragmentCache, type SnapshotContent } from './snapshot-format.js';

export { SNAPSHOT_FILE };
const DEFAULT_MIN_INTERVAL_MS = 10_000;
const RETRY_MS = 30_000;

/**
 * Reads and opens `<stateDir>/snapshot`. Undefined when there is none, or when it
 * does not open or is another cluster's/prefix's: then one warning says why, the
 * file is moved to `snapshot.bad`, and the daemon starts as without one.
 */
export async function loadSnapshot(stateDir: string, expect: { cluster: string; prefix: string; keyring: Keyring }, logger: Logger): Promise<SnapshotContent | undefined> {
  const file = path.join(stateDir, SNAPSHOT_FILE);
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') logger.info({ file }, 'no local snapshot yet; starting from etcd');
    else logger.warn({ file, code }, 'local snapshot cannot be read; ignored, starting from etcd');
    return undefined;
  }
  try {
    return decodeSnapshot(bytes, expect);
  } catch (err) {
    if (!(err instanceof SnapshotUnusable)) throw err;
    await fs.rename(file, `${file}.bad`).catch(() => undefined);
    logger.warn({ file }, `local snapshot ignored (moved to ${SNAPSHOT_FILE}.bad): ${err.message}; starting from etcd`);
    return undefined;
  } finally {
    bytes.fill(0);
  }
}

/**
 * The keys under the watched prefixes exactly as the source handed them (invalid
 * keys and confirmations included), and the revision they are etcd's state at:
 * what the snapshot saves, so that at start it can be compared with etcd's own
 * state at that revision (source/etcd.ts (0a)).
 */
export class SourceKeys {
  readonly keys = new Map<string, Kv>();
  revision = 0;

  note(e: SourceEvent): void {
    if (e.type === 'snapshot') {
      this.keys.clear();
      for (const kv of e.kvs) this.keys.set(kv.key, kv);
    } else if (e.type === 'changes') {
      for (const c of e.changes) c.type === 'put' ? this.keys.set(c.kv.key, c.kv) : this.keys.delete(c.key);
    } else if (e.type !== 'progress') return;
    this.revision = e.revision; // assigned: a rebase goes back
  }
}

export interface SnapshotWriterOptions {
  stateDir: string;
  cluster: string;
  prefix: string;
  /** The identity's public keys: the file key is sealed to each. */
  publicKeys: readonly Uint8Array[];
  logger: Logger;
  /** The state to save now: the keys are etcd's state at `revision`. */
  take: () => { revision: number; kvs: Kv[]; marks: Map<string, number> };
  /** At most one write per this long, ms (default 10 s): see (1). */
  minIntervalMs?: number;
  /** Told the time each write took, ms (metrics). */
  onWritten?: (ms: number, bytes: number) => void;
}

export class SnapshotWriter {
  private readonly file: string;
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private savedRevision = 0;
  private wantRevision = 0;
  private lastWriteAt = 0;
  private warned = false;
  private closed = false;
  private readonly fragments: FragmentCache = new WeakMap();

  constructor(private readonly opts: SnapshotWriterOptions) {
    this.file = path.join(opts.stateDir, SNAPSHOT_FILE);
  }

  /** The snapshot on disk is already at `revision` (it was loaded): no write until state moves past it. */
  loaded(revision: number): void {
    this.savedRevision = revision;
  }

  /** (1) The applied state is now at `revision`. */
  changed(revision: number): void {
    if (this.closed || revision <= 0 || revision === this.savedRevision) return;
    this.wantRevision = revision;
    if (this.timer) return;
    const wait = Math.max(0, this.lastWriteAt + (this.opts.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS) - Date.now());
    this.timer = setTimeout(() => void this.flush(), wait);
    this.timer.unref();
  }

  /** Writes now if the state moved since the last write. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(() => this.write());
    return this.writing;
  }

  /** (5) */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
  }

  private async write(): Promise<void> {
    if (this.wantRevision === 0 || this.wantRevision === this.savedRevision) return;
    const started = performance.now();
    this.lastWriteAt = Date.now();
    // (2)
    const state = this.opts.take();
    try {
      const bytes = await encodeSnapshotAsync({ cluster: this.opts.cluster, prefix: this.opts.prefix, savedAt: new Date().toISOString(), ...state }, this.opts.publicKeys, { fragments: this.fragments });
      // (3) dir 0700 only when we create it: an operator's own mode on an existing dir stays.
      await fs.mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
      await writeDurably(this.file, bytes);
      this.savedRevision = state.revision;
      if (this.warned) this.opts.logger.info({ file: this.file, revision: state.revision }, 'local snapshot written again');
      this.warned = false;
      this.opts.onWritten?.(performance.now() - started, bytes.length);
    } catch (err) {
      // (4)
      if (!this.warned) this.opts.logger.warn({ file: this.file, code: (err as NodeJS.ErrnoException).code, err: (err as Error).message }, 'local snapshot cannot be written; the previous one (if any) stays; retrying in 30 s');
      this.warned = true;
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => void this.flush(), RETRY_MS);
        this.timer.unref();
      }
    }
  }
}
