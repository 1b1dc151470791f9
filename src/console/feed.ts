/**
 * The console's one etcd watch: every key under PREFIX into the model
 * (model.ts), and batches of events and matrices out to whoever listens (the
 * server's SSE clients). Read-only: it never writes etcd.
 *
 *  (1) list PREFIX at head R, keys only (10,000 objects are a few hundred KB),
 *      then the status keys with values at the same R; apply both quietly;
 *  (2) one Watch of PREFIX from R + 1 (no prev_kv: the stream needs no old values);
 *  (3) each response's events go into the model in order; the resulting stream
 *      events are flushed to listeners every FLUSH_MS as one batch, and the
 *      matrix at most every MATRIX_MS after a change (and every second, for ages
 *      and staleness);
 *  (4) a compaction past our revision, a cancelled or broken stream: tell the
 *      listeners (`resync`), wait RETRY_MS, forget the model's keys, back to (1).
 *      Events between the last one seen and the re-list are not replayed in the
 *      stream (etcd may no longer hold them); the matrix and index are exact again.
 */
import type { Etcd3, IWatchResponse } from 'etcd3';
import { rawClients } from '../admin/history.js';
import type { Keyspace } from '../keyspace.js';
import type { Logger } from '../log.js';
import { prefixEnd } from '../source/etcd-client.js';
import { ConsoleModel, type ConsoleEvent, type Matrix } from './model.js';

const FLUSH_MS = 50;
const MATRIX_MS = 250;
const TICK_MS = 1000;
const RETRY_MS = 1000;
/** Newest events kept for a page that connects (it gets these first). */
export const RECENT_MAX = 1000;

export type FeedMessage =
  | { type: 'events'; events: ConsoleEvent[] }
  | { type: 'matrix'; matrix: Matrix; objects: number }
  | { type: 'state'; state: 'listing' | 'watching' | 'retrying'; detail?: string };

interface WatchStream {
  cancel(): void;
  write(x: unknown): void;
  removeAllListeners(): void;
  on(e: string, f: (...a: any[]) => void): unknown;
}

export class Feed {
  readonly model: ConsoleModel;
  readonly recent: ConsoleEvent[] = [];
  state: 'listing' | 'watching' | 'retrying' = 'listing';
  private readonly listeners = new Set<(m: FeedMessage) => void>();
  private pending: ConsoleEvent[] = [];
  private flushTimer?: NodeJS.Timeout;
  private matrixTimer?: NodeJS.Timeout;
  private tick?: NodeJS.Timeout;
  private stream?: WatchStream;
  private closed = false;
  private firstList?: Promise<void>;

  constructor(
    private readonly client: Etcd3,
    private readonly ks: Keyspace,
    private readonly logger: Logger,
    staleSeconds: number,
  ) {
    this.model = new ConsoleModel(ks, { staleSeconds }, Date.now());
  }

  /** Resolves after the first list (or rejects when it fails: the caller reports etcd unreachable). */
  start(): Promise<void> {
    this.tick = setInterval(() => this.listeners.size > 0 && this.emitMatrix(), TICK_MS);
    this.tick.unref();
    this.firstList = this.run();
    return this.firstList;
  }

  subscribe(fn: (m: FeedMessage) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.tick);
    clearTimeout(this.flushTimer);
    clearTimeout(this.matrixTimer);
    this.dropStream();
  }

  private emit(m: FeedMessage): void {
    for (const fn of this.listeners) fn(m);
  }

  private setState(state: Feed['state'], detail?: string): void {
    this.state = state;
    this.emit({ type: 'state', state, detail });
  }

  /** (1)–(2); the first call's failure goes to start()'s caller, later ones are retried (4). */
  private async run(): Promise<void> {
    const prefix = Buffer.from(`${this.ks.prefix}/`);
    const { kv, watch } = rawClients(this.client);
    this.setState('listing');
    const keys = await kv.range({ key: prefix, range_end: prefixEnd(prefix), keys_only: true });
    const rev = Number(keys.header.revision);
    const statusKey = Buffer.from(this.ks.statusPrefix());
    const statuses = await kv.range({ key: statusKey, range_end: prefixEnd(statusKey), revision: rev });
    const now = Date.now();
    this.model.reset(now);
    this.model.head = rev;
    // Status keys come with their values from the second read.
    for (const k of keys.kvs) if (!k.key.subarray(0, statusKey.length).equals(statusKey)) this.model.apply({ key: k.key.toString(), op: 'put', rev: Number(k.mod_revision) }, now, true);
    for (const k of statuses.kvs) this.model.apply({ key: k.key.toString(), op: 'put', rev: Number(k.mod_revision), value: k.value }, now, true);
    this.scheduleMatrix();
    if (this.closed) return;
    const stream = (await watch.watch()) as unknown as WatchStream;
    this.stream = stream;
    stream.on('data', (res: IWatchResponse) => this.onWatch(res));
    stream.on('error', (err: Error) => this.retry(`watch failed: ${err.message}`));
    stream.on('end', () => this.retry('watch stream ended'));
    stream.write({ create_request: { key: prefix, range_end: prefixEnd(prefix), start_revision: rev + 1 } });
    this.logger.info({ revision: rev, keys: keys.kvs.length }, 'console: listed etcd, watching from the next revision');
    this.setState('watching');
  }

  /** (3) */
  private onWatch(res: IWatchResponse): void {
    if (Number(res.compact_revision) > 0) return this.retry(`etcd compacted past the console's revision (compact revision ${res.compact_revision}); listing again`);
    if (res.canceled) return this.retry(`watch cancelled by etcd: ${res.cancel_reason || 'no reason given'}`);
    const now = Date.now();
    this.model.head = Math.max(this.model.head, Number(res.header.revision));
    for (const e of res.events) {
      const op = e.type === 'Delete' ? 'delete' : 'put';
      const ev = this.model.apply({ key: e.kv.key.toString(), op, rev: Number(e.kv.mod_revision), value: op === 'put' ? e.kv.value : undefined }, now);
      if (ev) this.pending.push(ev);
    }
    if (res.events.length > 0) this.scheduleMatrix();
    if (this.pending.length > 0 && !this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  private flush(): void {
    this.flushTimer = undefined;
    const events = this.pending;
    this.pending = [];
    this.recent.push(...events);
    if (this.recent.length > RECENT_MAX) this.recent.splice(0, this.recent.length - RECENT_MAX);
    this.emit({ type: 'events', events });
  }

  private scheduleMatrix(): void {
    if (this.matrixTimer) return;
    this.matrixTimer = setTimeout(() => {
      this.matrixTimer = undefined;
      if (this.listeners.size > 0) this.emitMatrix();
    }, MATRIX_MS);
  }

  private emitMatrix(): void {
    this.emit({ type: 'matrix', matrix: this.model.matrix(Date.now()), objects: this.model.objectCount });
  }

  private dropStream(): void {
    const s = this.stream;
    this.stream = undefined;
    if (!s) return;
    s.removeAllListeners();
    s.on('error', () => undefined); // a late error on a stream we dropped is not news
    s.cancel();
  }

  /** (4) */
  private retry(reason: string): void {
    if (this.closed || this.state === 'retrying') return;
    this.dropStream();
    this.logger.warn({ reason }, `console: ${reason}; listing etcd again in ${RETRY_MS / 1000} s`);
    this.setState('retrying', reason);
    setTimeout(() => {
      if (this.closed) return;
      this.state = 'listing';
      this.run().catch((err: Error) => this.retry(`list failed: ${err.message}`));
    }, RETRY_MS).unref();
  }
}
