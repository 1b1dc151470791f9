/**
 * `confsync history`'s library half: every change etcd still keeps under one
 * object (or one key of it), grouped by revision, newest first.
 *
 * etcd keeps every revision until compaction, but a Range at a revision only
 * shows the keys alive then: a delete is visible only as an absence. A Watch
 * from an old revision replays every event, deletes included, with the previous
 * value (prev_kv), so it is the one complete source. Values pass through
 * untouched: the caller escapes config text and never prints a sealed value.
 */
import { KVClient, WatchClient, type Etcd3, type IKeyValue, type IWatchResponse } from 'etcd3';
import { OperationFailed, UserError } from '../errors.js';
import type { Keyspace, ObjectRef, Scope } from '../keyspace.js';
import { prefixEnd } from '../source/etcd-client.js';

export interface KeyChange {
  /** The data key (or `@meta`, or the raw rest of an invalid key): print it through `printable`. */
  key: string;
  type: 'put' | 'delete';
  /** The value before this revision; undefined when the key did not exist (or its old version was compacted). */
  before?: Buffer;
  /** The value written; undefined for a delete. */
  after?: Buffer;
}

export interface RevisionEntry {
  revision: number;
  changes: KeyChange[];
}

export interface History {
  /** etcd's head revision when read: the history is complete up to it. */
  head: number;
  /** History before this revision was compacted away (0: nothing compacted). */
  compactRevision: number;
  /** Newest first. */
  revisions: RevisionEntry[];
}

export interface HistoryTarget {
  client: Etcd3;
  ks: Keyspace;
  scope: Scope;
  ref: ObjectRef;
  /** One data key instead of the whole object. */
  key?: string;
  /** Give up after this long (a healthy etcd replays thousands of revisions in well under a second). */
  deadlineMs?: number;
}

interface WatchStream {
  end(): void;
  cancel(): void;
  write(x: unknown): void;
  removeAllListeners(): void;
  on(e: string, f: (...a: any[]) => void): unknown;
}

/** The etcd key range of a whole object or of one key: [key, end). */
export function objectRange(ks: Keyspace, scope: Scope, ref: ObjectRef, key?: string): { key: Buffer; end: Buffer } {
  if (key !== undefined) {
    const k = Buffer.from(ks.dataKey(scope, ref, key));
    return { key: k, end: Buffer.concat([k, Buffer.from([0])]) };
  }
  const p = Buffer.from(ks.kindPrefix(scope, ref.kind, ref.namespace, ref.name));
  return { key: p, end: prefixEnd(p) };
}

/** etcd3 exposes its generated gRPC clients; the pool handles auth and hosts. */
export function rawClients(client: Etcd3): { kv: KVClient; watch: WatchClient } {
  const pool = (client as unknown as { pool: ConstructorParameters<typeof KVClient>[0] }).pool;
  return { kv: new KVClient(pool), watch: new WatchClient(pool) };
}

/** etcd 3.4 sends a catch-up batch of at most this many revisions per watcher per pass (mvcc watchBatchMaxRevs). */
const BATCH_MAX_REVS = 1000;
/** etcd's sync loop hands unsynced watchers their events every 100 ms: this many ms of silence is several passes. */
const QUIET_MS = 500;

/**
 * Reads the history of the target's range:
 *
 *  (1) read the range at etcd's head H (keys only: their mod revisions);
 *  (2) open a Watch of the range from revision 1 with prev_kv; if etcd cancels it
 *      with compact_revision C, note C and open it again from C + 1 (a Watch from
 *      before C is refused; C itself is the oldest state a Range can read);
 *  (3) collect events ≤ H, keyed by their mod revision (a delete's is the revision
 *      of the delete); more than `maxEvents` is refused (memory stays bounded);
 *  (4) decide when the replay is complete. etcd 3.4 answers a progress request at
 *      once, before the catch-up (seen on 3.4.23), so that is no signal. Instead:
 *      (a) a catch-up batch with fewer than BATCH_MAX_REVS revisions whose header
 *          (the head when etcd sent it) is ≥ H was the last one: done; else
 *      (b) after QUIET_MS without a batch, done if the replay agrees with (1):
 *          every key at H modified since the watch start has its last event a put
 *          at that revision, and every key whose last event is a put exists at H
 *          with that revision. A disagreement means events are still due: wait on,
 *          up to the deadline;
 *  (5) close the stream; group the events by revision, newest first.
 */
export async function readHistory(t: HistoryTarget, maxEvents = 100_000): Promise<History> {
  const range = objectRange(t.ks, t.scope, t.ref, t.key);
  const { kv, watch } = rawClients(t.client);
  // (1)
  const now = await kv.range({ key: range.key, range_end: range.end, keys_only: true });
  const head = Number(now.header.revision);
  const atHead = new Map(now.kvs.map((k) => [k.key.toString('latin1'), Number(k.mod_revision)]));
  const stream = (await watch.watch()) as unknown as WatchStream;
  const byRevision = new Map<number, KeyChange[]>();
  const last = new Map<string, { type: 'put' | 'delete'; rev: number }>();
  let compactRevision = 0;
  let events = 0;
  const timers: NodeJS.Timeout[] = [];
  const agrees = () => {
    const from = compactRevision + 1;
    for (const [key, mod] of atHead) if (mod >= from && (last.get(key)?.type !== 'put' || last.get(key)?.rev !== mod)) return false;
    for (const [key, ev] of last) if (ev.type === 'put' && atHead.get(key) !== ev.rev) return false;
    return true;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let quiet: NodeJS.Timeout | undefined;
      const armQuiet = () => {
        clearTimeout(quiet);
        quiet = setTimeout(() => (agrees() ? resolve() : armQuiet()), QUIET_MS);
        timers.push(quiet);
      };
      const create = (from: number) => stream.write({ create_request: { key: range.key, range_end: range.end, start_revision: from, prev_kv: true } });
      stream.on('data', (res: IWatchResponse) => {
        // (2)
        if (Number(res.compact_revision) > 0) {
          compactRevision = Number(res.compact_revision);
          return create(compactRevision + 1);
        }
        if (res.canceled) return reject(new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
        if (res.created) return armQuiet();
        if (res.events.length === 0) return; // a progress answer: no signal on 3.4
        // (3)
        const revs = new Set<number>();
        for (const ev of res.events) {
          const rev = Number(ev.kv.mod_revision);
          revs.add(rev);
          if (rev > head) continue;
          const type = ev.type === 'Delete' ? 'delete' : 'put';
          last.set(ev.kv.key.toString('latin1'), { type, rev });
          if (++events > maxEvents) return reject(new UserError(`more than ${maxEvents} changes kept by etcd under this range; ask for one key (<ns>/<name>/<key>)`));
          const list = byRevision.get(rev) ?? [];
          list.push(toChange(t.ks, range.key.toString(), type, ev.kv, ev.prev_kv));
          byRevision.set(rev, list);
        }
        // (4)
        if (Number(res.header.revision) >= head && revs.size < BATCH_MAX_REVS) return resolve();
        if (Math.max(...revs) >= head) return resolve();
        armQuiet();
      });
      stream.on('error', (err: Error) => reject(err));
      stream.on('end', () => reject(new Error('watch stream ended before the history was read')));
      create(1);
      const ms = t.deadlineMs ?? 30_000;
      timers.push(setTimeout(() => reject(new OperationFailed(`etcd did not finish replaying the history within ${ms / 1000} s; try again`)), ms));
    });
  } finally {
    // (5)
    for (const timer of timers) clearTimeout(timer);
    stream.removeAllListeners();
    stream.on('error', () => undefined); // a late error on a stream we dropped is not news
    // end() only half-closes: etcd would keep the stream, and this process, alive.
    stream.cancel();
  }
  const revisions = [...byRevision.entries()].sort((a, b) => b[0] - a[0]).map(([revision, changes]) => ({ revision, changes }));
  return { head, compactRevision, revisions };
}

function toChange(ks: Keyspace, base: string, type: 'put' | 'delete', kv: IKeyValue, prev: IKeyValue | undefined): KeyChange {
  const full = kv.key.toString();
  const parsed = ks.parse(full);
  const key = parsed.type === 'data' ? parsed.key : parsed.type === 'meta' ? '@meta' : full.startsWith(base) ? full.slice(base.length) : ks.relative(full);
  return { key, type, before: prev?.value, after: type === 'put' ? kv.value : undefined };
}
