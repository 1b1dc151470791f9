/**
 * The encrypted local snapshot, `<stateDir>/snapshot` (file 0600, dir 0700):
 * what this daemon applied — the keys as etcd holds them (secrets still sealed),
 * their revision, the replay high-water marks — sealed to its own identity
 * (snapshot-format.ts), plus `<stateDir>/snapshot.journal`, the changes applied
 * since (snapshot-journal.ts). At start it lets the daemon serve while etcd is
 * down and resume the watch without a full list (source/etcd.ts).
 *
 * Writing, after applied batches:
 *  (1) changed() notes that the applied state moved; a write starts at once when
 *      the last one is `minIntervalMs` old (config snapshotIntervalSeconds,
 *      default 1 s), else when it is: at most one write per interval, whatever
 *      the rate of puts. A change that only moves the revision (writes elsewhere
 *      in etcd: the keys are still etcd's state at the saved revision) is written
 *      at most once a minute, and at a clean stop. A crash or an offline start finds the state of at most
 *      one interval (plus a write) ago. Keys and marks are taken at one moment,
 *      so no mark is above the sealed version the snapshot's keys hold (a start
 *      never refuses its own snapshot's secrets as replays);
 *  (2) a write appends one journal record — the keys put and deleted since the
 *      last write, the marks that rose, the revision — sealed with the full
 *      snapshot's file key, then fdatasync: its cost is what changed, not the
 *      keyspace. A start goes on with the snapshot it loaded from its own state
 *      dir (SnapshotWriter.adopt): its journal read to the end, its file key sealed
 *      to the identity's public keys as they are now; the source's first snapshot
 *      of that state (offline, or resumed after its catch-up) is then one record
 *      of what moved, and an unchanged restart writes nothing. A full write is made
 *      instead when there is no such snapshot (none, another format, a journal that
 *      stopped at a bad record, a key added to or removed from the identity), after
 *      a re-list (the source replaced everything), after a failed write, and when
 *      the journal outgrows half the full snapshot (so a start never reads more than ~1.5×);
 *  (3) a full write takes every key and mark, encodes and seals them a slice at
 *      a time with a fresh file key and id, the event loop getting a turn
 *      between slices, writes `snapshot.tmp-<pid>` (0600), fsync,
 *      rename over `snapshot`, fsync the dir — a crash leaves the old file or the
 *      new one — then removes the old journal (it names the old id: left behind,
 *      it is ignored, never applied to the new snapshot). The first record after
 *      it creates the journal the same durable way;
 *  (4) a failed write is retried 30 s later (or at the next change), as a full
 *      write; one warning;
 *  (5) close() writes what is pending.
 * A daemon without an identity keeps no snapshot: nothing to seal it to.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fingerprint, type Keyring } from '../envelope/identity.js';
import type { Logger } from '../log.js';
import type { Kv, SourceEvent } from '../source/types.js';
import { writeDurably } from './durable-file.js';
import { SNAPSHOT_FILE } from './location.js';
import { openSnapshot, SnapshotUnusable, writeSnapshotAsync, type SnapshotContent } from './snapshot-format.js';
import { decodeJournal, encodeRecord, journalHeader } from './snapshot-journal.js';

export { SNAPSHOT_FILE };
export const JOURNAL_FILE = `${SNAPSHOT_FILE}.journal`;
/** A journal below this size is never a reason for a full write (small keyspaces). */
const MIN_JOURNAL_BYTES = 1 << 20;
const DEFAULT_MIN_INTERVAL_MS = 1_000;
/** A record that only moves the revision (others' writes elsewhere in etcd) is written at most this often. */
const REVISION_ONLY_MS = 60_000;
const RETRY_MS = 30_000;

/**
 * Reads and opens `<stateDir>/snapshot` and applies its journal. Undefined when
 * there is none, or when it does not open or is another cluster's/prefix's: then
 * one warning says why, the file is moved to `snapshot.bad`, and the daemon
 * starts as without one. A journal that stops early (a crash while appending, a
 * record that does not authenticate) gives the state of its last good record.
 */
export async function loadSnapshot(
  stateDir: string,
  expect: { cluster: string; prefix: string; keyring: Keyring },
  logger: Logger,
  /** Told what SnapshotWriter.adopt needs to go on appending to this snapshot's journal (it owns the key copy). */
  onBase?: (base: LoadedBase) => void,
): Promise<SnapshotContent | undefined> {
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
  let opened: ReturnType<typeof openSnapshot>;
  try {
    opened = openSnapshot(bytes, expect);
  } catch (err) {
    if (!(err instanceof SnapshotUnusable)) throw err;
    await fs.rename(file, `${file}.bad`).catch(() => undefined);
    logger.warn({ file }, `local snapshot ignored (moved to ${SNAPSHOT_FILE}.bad): ${err.message}; starting from etcd`);
    return undefined;
  } finally {
    bytes.fill(0);
  }
  const { content, fileKey, sealedTo } = opened;
  try {
    if (!content.id) return content;
    const journal = await applyJournal(path.join(stateDir, JOURNAL_FILE), content, fileKey, logger);
    // Read whole (or absent, or an older write's): records can follow it. A journal that
    // stopped early cannot take more (they would follow the bad record): the next write is full.
    if (journal && onBase) onBase({ id: content.id, fileKey: new Uint8Array(fileKey), bytes: bytes.length, ...journal, sealedTo, marks: new Map(content.marks) });
  } finally {
    fileKey.fill(0);
  }
  return content;
}

/** The snapshot a start loaded, as the writer needs it to append records to its journal instead of writing it anew. */
export interface LoadedBase {
  id: string;
  fileKey: Uint8Array;
  /** Size of the full snapshot file. */
  bytes: number;
  /** Size of the journal and its records (0, 0: none yet, or an older write's, replaced by the first record). */
  journalBytes: number;
  records: number;
  /** Fingerprints of the public keys the file key is sealed to. */
  sealedTo: string[];
  /** The marks as the snapshot and its journal hold them. */
  marks: Map<string, number>;
}

/**
 * Applies the journal of `content` (its records in order) to it, in place. Returns
 * its size and records when more can be appended to it: read to its end, absent,
 * or another write's (replaced by the next record); undefined otherwise.
 */
async function applyJournal(file: string, content: SnapshotContent, fileKey: Uint8Array, logger: Logger): Promise<{ journalBytes: number; records: number } | undefined> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') logger.warn({ file, code }, 'snapshot journal cannot be read; starting from the full snapshot alone (older: the watch catches up from its revision)');
    return code === 'ENOENT' ? { journalBytes: 0, records: 0 } : undefined;
  }
  const read = decodeJournal(bytes, fileKey, content.id!);
  const size = bytes.length;
  bytes.fill(0);
  if (!read.matches) {
    if (read.stopped) logger.warn({ file }, `snapshot journal ignored: ${read.stopped}`);
    return read.stopped ? undefined : { journalBytes: 0, records: 0 };
  }
  if (read.records.length) {
    const keys = new Map(content.kvs.map((kv) => [kv.key, kv]));
    for (const r of read.records) {
      for (const kv of r.put) keys.set(kv.key, kv);
      for (const k of r.del) keys.delete(k);
      for (const [p, v] of r.marks) if ((content.marks.get(p) ?? -1) < v) content.marks.set(p, v);
      content.revision = r.revision;
    }
    content.kvs = [...keys.values()];
  }
  if (read.stopped) {
    logger.warn({ file, records: read.records.length, revision: content.revision }, `snapshot journal read up to a bad record: ${read.stopped}; the state of the record before it is used (the watch catches up from its revision)`);
    return undefined;
  }
  return { journalBytes: size, records: read.records.length };
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
  /** Keys put (the Kv) or deleted (undefined) since the last take; meaningless while `relisted`. */
  private changes = new Map<string, Kv | undefined>();
  /** The source replaced everything since the last takeAll(): only a full write will do. */
  private relisted = true;

  /**
   * The keys of the snapshot this start loaded, which the writer goes on appending to
   * (SnapshotWriter.adopt): the source's snapshot of the same state (served offline,
   * or resumed after its catch-up) is then counted as the changes from it.
   */
  seed(kvs: Kv[], revision: number): void {
    this.keys.clear();
    for (const kv of kvs) this.keys.set(kv.key, kv);
    this.changes = new Map();
    this.relisted = false;
    this.revision = revision;
  }

  note(e: SourceEvent): void {
    if (e.type === 'snapshot' && (e.resumed || e.offline) && !this.relisted) {
      // The loaded state moved on by its catch-up (nothing, offline): the difference is a record.
      const before = new Map(this.keys);
      this.keys.clear();
      for (const kv of e.kvs) {
        this.keys.set(kv.key, kv);
        const old = before.get(kv.key);
        before.delete(kv.key);
        if (old !== kv && !(old && old.modRevision === kv.modRevision && old.value.equals(kv.value))) this.changes.set(kv.key, kv);
      }
      for (const key of before.keys()) this.changes.set(key, undefined);
    } else if (e.type === 'snapshot') {
      this.keys.clear();
      for (const kv of e.kvs) this.keys.set(kv.key, kv);
      this.changes.clear();
      this.relisted = true;
    } else if (e.type === 'changes') {
      for (const c of e.changes) {
        if (c.type === 'put') this.keys.set(c.kv.key, c.kv);
        else this.keys.delete(c.key);
        if (!this.relisted) this.changes.set(c.type === 'put' ? c.kv.key : c.key, c.type === 'put' ? c.kv : undefined);
      }
    } else if (e.type !== 'progress') return;
    this.revision = e.revision; // assigned: a rebase goes back
  }

  /** Every key now; changes are counted from here. */
  takeAll(): Kv[] {
    this.changes = new Map();
    this.relisted = false;
    return [...this.keys.values()];
  }

  /** The keys put and deleted since the last take, or undefined when only takeAll() will do (a re-list). */
  takeChanges(): { put: Kv[]; del: string[] } | undefined {
    if (this.relisted) return undefined;
    const put: Kv[] = [];
    const del: string[] = [];
    for (const [key, kv] of this.changes) kv ? put.push(kv) : del.push(key);
    this.changes = new Map();
    return { put, del };
  }
}

export interface SnapshotWriterOptions {
  stateDir: string;
  cluster: string;
  prefix: string;
  /** The identity's public keys: the file key is sealed to each. */
  publicKeys: readonly Uint8Array[];
  logger: Logger;
  /** The state to save now, whole (a full write): the keys are etcd's state at `revision`. */
  take: () => { revision: number; kvs: Kv[]; marks: Map<string, number> };
  /**
   * What changed since the last take, and all marks (a journal record), or
   * undefined when only a full take will do. Without it every write is full.
   */
  takeChanges?: () => { revision: number; put: Kv[]; del: string[]; marks: Map<string, number> } | undefined;
  /** At most one write per this long, ms (default 10 s): see (1). */
  minIntervalMs?: number;
  /** Told the time each write took, ms, its bytes and whether it was full (metrics, bench). */
  onWritten?: (ms: number, bytes: number, full: boolean) => void;
}

/** The full snapshot this process wrote last, which the journal extends. */
interface Base {
  id: string;
  fileKey: Uint8Array;
  bytes: number;
  /** Journal bytes (header included) and records written after it. */
  journalBytes: number;
  records: number;
  /** When the last record (or the full write) was made, Date.now(). */
  lastAt: number;
  /** The marks as written so far (a record carries the ones that rose). */
  marks: Map<string, number>;
}

export class SnapshotWriter {
  private readonly file: string;
  private readonly journal: string;
  private base?: Base;
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private savedRevision = 0;
  private wantRevision = 0;
  private lastWriteAt = 0;
  private warned = false;
  private closed = false;
  private closing = false;

  constructor(private readonly opts: SnapshotWriterOptions) {
    this.file = path.join(opts.stateDir, SNAPSHOT_FILE);
    this.journal = path.join(opts.stateDir, JOURNAL_FILE);
  }

  /** The snapshot on disk is already at `revision` (it was loaded): no write until state moves past it. */
  loaded(revision: number): void {
    this.savedRevision = revision;
  }

  /**
   * Goes on appending to the journal of the snapshot this start loaded (from this
   * writer's own state dir), so that a restart writes what changed, not the whole
   * state again (a full write is ~0.5 s of CPU and a ~17 MiB file at 110,000 keys).
   * Only when its file key is sealed to exactly this identity's public keys: after
   * a key was added or removed, the next write is full and sealed to the new set.
   * Returns whether it did. `base.fileKey` is zeroed either way (the writer keeps a copy);
   * `base.marks` (loadSnapshot's own copy) becomes the writer's.
   */
  adopt(base: LoadedBase): boolean {
    const want = new Set(this.opts.publicKeys.map((pk) => fingerprint(pk)));
    const fileKey = new Uint8Array(base.fileKey);
    base.fileKey.fill(0);
    if (base.sealedTo.length !== want.size || !base.sealedTo.every((id) => want.has(id))) {
      fileKey.fill(0);
      return false;
    }
    this.dropBase();
    this.base = { id: base.id, fileKey, bytes: base.bytes, journalBytes: base.journalBytes, records: base.records, lastAt: Date.now(), marks: base.marks };
    return true;
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
    this.closing = true;
    await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
    this.dropBase();
  }

  private dropBase(): void {
    this.base?.fileKey.fill(0);
    this.base = undefined;
  }

  private async write(): Promise<void> {
    if (this.wantRevision === 0 || this.wantRevision === this.savedRevision) return;
    const started = performance.now();
    this.lastWriteAt = Date.now();
    let full = true;
    try {
      // (2) a record when the journal may grow; (3) else, or when changes cannot be told, a full write
      const base = this.base;
      const changes = base && base.journalBytes <= Math.max(base.bytes / 2, MIN_JOURNAL_BYTES) ? this.opts.takeChanges?.() : undefined;
      let bytes: number;
      let revision: number;
      if (base && changes && !changes.put.length && !changes.del.length && !this.closing && Date.now() - base.lastAt < REVISION_ONLY_MS && ![...changes.marks].some(([p, v]) => (base.marks.get(p) ?? -1) < v)) {
        // Only the revision moved (writes elsewhere in etcd): the saved state is still
        // etcd's state at the saved revision, which is all a start needs; the next
        // change or a clean stop writes it.
        return;
      }
      if (base && changes) {
        full = false;
        revision = changes.revision;
        bytes = await this.append(base, changes);
      } else {
        const state = this.opts.take();
        revision = state.revision;
        bytes = await this.writeFull(state);
      }
      this.savedRevision = revision;
      if (this.warned) this.opts.logger.info({ file: this.file, revision }, 'local snapshot written again');
      this.warned = false;
      this.opts.onWritten?.(performance.now() - started, bytes, full);
    } catch (err) {
      // (4) what the failed write took is not on disk: the next write is a full one
      this.dropBase();
      if (!this.warned) this.opts.logger.warn({ file: full ? this.file : this.journal, code: (err as NodeJS.ErrnoException).code, err: (err as Error).message }, 'local snapshot cannot be written; the previous one (if any) stays; retrying in 30 s');
      this.warned = true;
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => void this.flush(), RETRY_MS);
        this.timer.unref();
      }
    }
  }

  /** (3) */
  private async writeFull(state: ReturnType<SnapshotWriterOptions['take']>): Promise<number> {
    this.dropBase();
    const id = randomBytes(16).toString('hex');
    const fileKey = new Uint8Array(randomBytes(32));
    try {
      const content = { id, cluster: this.opts.cluster, prefix: this.opts.prefix, savedAt: new Date().toISOString(), ...state };
      // dir 0700 only when we create it: an operator's own mode on an existing dir stays.
      await fs.mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
      let bytes = 0;
      // Sealed and written a chunk at a time: the whole file is never in memory.
      await writeDurably(this.file, async (write) => (bytes = await writeSnapshotAsync(content, this.opts.publicKeys, { fileKey }, write)));
      await fs.rm(this.journal, { force: true }).catch(() => undefined);
      this.base = { id, fileKey, bytes, journalBytes: 0, records: 0, lastAt: Date.now(), marks: new Map(state.marks) };
      return bytes;
    } catch (err) {
      fileKey.fill(0);
      throw err;
    }
  }

  /** (2) */
  private async append(base: Base, changes: NonNullable<ReturnType<NonNullable<SnapshotWriterOptions['takeChanges']>>>): Promise<number> {
    const risen = new Map<string, number>();
    for (const [p, v] of changes.marks) if ((base.marks.get(p) ?? -1) < v) risen.set(p, v);
    const record = encodeRecord({ revision: changes.revision, put: changes.put, del: changes.del, marks: risen }, base.fileKey, base.id, base.records);
    if (base.records === 0) {
      await writeDurably(this.journal, Buffer.concat([journalHeader(base.id), record]));
      base.journalBytes = record.length + journalHeader(base.id).length;
    } else {
      const fh = await fs.open(this.journal, 'a', 0o600);
      try {
        // Someone removed or changed the journal: records after theirs would be unreadable.
        if ((await fh.stat()).size !== base.journalBytes) throw new Error('the journal changed under the daemon (size differs); writing a full snapshot instead');
        await fh.writeFile(record);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      base.journalBytes += record.length;
    }
    base.records++;
    base.lastAt = Date.now();
    for (const [p, v] of risen) base.marks.set(p, v);
    return record.length;
  }
}
