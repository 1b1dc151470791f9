import { setTimeout as sleep } from 'node:timers/promises';
import { KVClient, WatchClient, type Etcd3, type IKeyValue, type IWatchResponse } from 'etcd3';
import type { Logger } from '../log.js';
import { prefixEnd } from './etcd-client.js';
import type { Change, ConnectionState, Kv, Source, SourceEvent } from './types.js';

export interface EtcdSourceOptions {
  client: Etcd3;
  /** Watched key prefix, with its trailing slash (e.g. "/confsync/"). */
  prefix: string;
  logger: Logger;
  /** Keys per list page; halved when a page exceeds gRPC's receive limit. */
  pageSize?: number;
  /** Backoff between attempts: first, cap (ms). Injectable so tests run fast. */
  backoff?: { initialMs: number; maxMs: number };
  /** How often to ask etcd for a progress notification while idle (ms); 0 = never. */
  progressIntervalMs?: number;
  delay?: (ms: number, signal: AbortSignal) => Promise<unknown>;
}

/**
 * List + watch, the known-good way (client-node's ListWatch), with the resume
 * revision owned here rather than by etcd3's high-level watcher, which moves it
 * to the server's head on reconnect and so loses a catch-up backlog:
 *
 *  (1) list the prefix at one revision R, page by page (every page read AT R,
 *      so the snapshot is consistent); emit `snapshot`; rev := R.
 *  (2) open a Watch stream from rev + 1.
 *  (3) for each response: events → emit `changes`; rev := the last event's
 *      mod revision (NOT the header revision: during catch-up etcd sends batches
 *      whose header is the current head while older events are still to come).
 *      A response without events after `created` is a progress notification:
 *      etcd promises nothing under the prefix changed up to its header revision.
 *  (4) stream error or end → back off (jittered, capped) and go to (2) from
 *      rev + 1: nothing is lost and nothing repeats.
 *  (5) compact_revision set (the history we need is gone) → go to (1): a full
 *      re-list, which the consumer reconciles against (pruning what vanished).
 */
export class EtcdSource implements Source {
  private readonly abort = new AbortController();
  private readonly kv: KVClient;
  private readonly watchClient: WatchClient;
  private readonly prefixBuf: Buffer;
  private readonly rangeEnd: Buffer;
  private pageSize: number;
  private running?: Promise<void>;
  private stream?: { end(): void; write(x: unknown): void; removeAllListeners(): void; on(e: string, f: (...a: any[]) => void): unknown };

  constructor(private readonly opts: EtcdSourceOptions) {
    // etcd3 exposes its generated gRPC clients; the pool handles auth and hosts.
    const pool = (opts.client as unknown as { pool: ConstructorParameters<typeof KVClient>[0] }).pool;
    this.kv = new KVClient(pool);
    this.watchClient = new WatchClient(pool);
    this.prefixBuf = Buffer.from(opts.prefix);
    this.rangeEnd = prefixEnd(this.prefixBuf);
    this.pageSize = opts.pageSize ?? 1000;
  }

  start(onEvent: (event: SourceEvent) => void): void {
    this.running = this.loop(onEvent);
  }

  async close(): Promise<void> {
    this.abort.abort();
    this.stream?.end();
    await this.running;
  }

  private async loop(onEvent: (event: SourceEvent) => void): Promise<void> {
    const { signal } = this.abort;
    const setState = (state: ConnectionState, detail?: string) => onEvent({ type: 'state', state, detail });
    const backoff = this.opts.backoff ?? { initialMs: 100, maxMs: 1000 };
    const delay = this.opts.delay ?? ((ms, s) => sleep(ms, undefined, { signal: s }).catch(() => undefined));
    let rev = 0; // 0 = no consistent view yet: list first
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (rev === 0) {
          setState('listing');
          const snapshot = await this.list();
          rev = snapshot.revision;
          onEvent(snapshot);
        }
        setState('watching');
        const outcome = await this.watchFrom(rev + 1, onEvent, (r) => {
          rev = r;
          failures = 0;
        });
        if (outcome === 'closed') break;
        rev = 0; // compacted: re-list
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const ms = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2);
        const reason = (err as Error).message;
        this.opts.logger.warn({ err: reason, retryInMs: Math.round(ms), resumeFrom: rev + 1 }, 'etcd unavailable; keeping the last good state, retrying');
        setState('backoff', reason);
        await delay(ms, signal);
      }
    }
    setState('closed');
  }

  /** (1) A consistent snapshot: the first page fixes the revision, later pages read at it. `plan` uses it alone. */
  async list(): Promise<Extract<SourceEvent, { type: 'snapshot' }>> {
    const kvs: Kv[] = [];
    let revision = 0;
    let from = this.prefixBuf;
    for (;;) {
      let res;
      try {
        res = await this.kv.range({ key: from, range_end: this.rangeEnd, limit: this.pageSize, revision: revision || undefined });
      } catch (err) {
        if ((err as Error).name === 'GRPCResourceExhastedError' && this.pageSize > 1) {
          this.pageSize = Math.max(1, Math.floor(this.pageSize / 2));
          continue;
        }
        throw err;
      }
      if (revision === 0) revision = Number(res.header.revision);
      for (const kv of res.kvs) kvs.push(toKv(kv));
      if (!res.more || res.kvs.length === 0) break;
      from = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
    return { type: 'snapshot', revision, kvs };
  }

  /** (2)–(5). Resolves 'compacted' when a re-list is needed, 'closed' on close(); rejects on stream failure. */
  private async watchFrom(startRevision: number, onEvent: (e: SourceEvent) => void, advance: (rev: number) => void): Promise<'compacted' | 'closed'> {
    const stream = (await this.watchClient.watch()) as unknown as NonNullable<typeof this.stream>;
    this.stream = stream;
    const { signal } = this.abort;
    let progressTimer: NodeJS.Timeout | undefined;
    let onAbort = () => {};
    try {
      return await new Promise<'compacted' | 'closed'>((resolve, reject) => {
        let created = false;
        stream.on('data', (res: IWatchResponse) => {
          if (Number(res.compact_revision) > 0) {
            this.opts.logger.warn({ compactRevision: Number(res.compact_revision), wanted: startRevision }, 'etcd compacted past our revision; re-listing');
            return resolve('compacted');
          }
          if (res.canceled) return reject(new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
          if (res.created) {
            created = true;
            return;
          }
          if (res.events.length > 0) {
            const changes = res.events.map(toChange);
            const last = changes[changes.length - 1]!;
            const revision = last.type === 'put' ? last.kv.modRevision : last.modRevision;
            advance(revision);
            onEvent({ type: 'changes', revision, changes });
          } else if (created) {
            const revision = Number(res.header.revision);
            advance(revision);
            onEvent({ type: 'progress', revision });
          }
        });
        stream.on('error', (err: Error) => reject(err));
        stream.on('end', () => (signal.aborted ? resolve('closed') : reject(new Error('watch stream ended'))));
        onAbort = () => resolve('closed');
        signal.addEventListener('abort', onAbort, { once: true });
        stream.write({
          create_request: { key: this.prefixBuf, range_end: this.rangeEnd, start_revision: startRevision, progress_notify: true },
        });
        const every = this.opts.progressIntervalMs ?? 5000;
        if (every > 0) progressTimer = setInterval(() => stream.write({ progress_request: {} }), every);
      });
    } finally {
      clearInterval(progressTimer);
      signal.removeEventListener('abort', onAbort);
      stream.removeAllListeners();
      stream.on('error', () => undefined); // a late error on a stream we dropped is not news
      stream.end();
      this.stream = undefined;
    }
  }
}

function toKv(kv: IKeyValue): Kv {
  return { key: kv.key.toString('utf8'), value: kv.value, modRevision: Number(kv.mod_revision) };
}

function toChange(ev: { type: string; kv: IKeyValue }): Change {
  return ev.type === 'Delete' || (ev.type as unknown) === 1
    ? { type: 'delete', key: ev.kv.key.toString('utf8'), modRevision: Number(ev.kv.mod_revision) }
    : { type: "put", kv: toKv(ev.kv) };
}
