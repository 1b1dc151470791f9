import { setTimeout as sleep } from 'node:timers/promises';
import { KVClient, WatchClient, type Etcd3, type IKeyValue, type IWatchResponse } from 'etcd3';
import type { Logger } from '../log.js';
import { prefixEnd } from './etcd-client.js';
import type { Change, ConnectionState, Kv, Source, SourceEvent } from './types.js';

export interface EtcdSourceOptions {
  client: Etcd3;
  /**
   * Key prefixes to list and watch, each with its trailing slash. A daemon
   * watches only `PREFIX/global/` and `PREFIX/clusters/<me>/`: what it may read
   * under least privilege, and no traffic for other clusters.
   */
  prefixes: string[];
  logger: Logger;
  /** Keys per list page; halved when a page exceeds gRPC's receive limit. */
  pageSize?: number;
  /** Backoff between attempts: first, cap (ms). Injectable so tests run fast. */
  backoff?: { initialMs: number; maxMs: number };
  /** How often to ask etcd for a progress notification (ms); 0 = never. */
  progressIntervalMs?: number;
  delay?: (ms: number, signal: AbortSignal) => Promise<unknown>;
}

/** A list page that takes longer is abandoned and retried (a hung member must not stall us). */
const LIST_PAGE_DEADLINE_MS = 10_000;

/** etcd answers a progress_request with one response for the whole stream, watch id -1. */
const STREAM_WIDE = '-1';

/**
 * List + watch, the known-good way (client-node's ListWatch), with the resume
 * revisions owned here rather than by etcd3's high-level watcher, which moves
 * its revision to the server's head on reconnect and so loses a catch-up backlog:
 *
 *  (1) list every prefix at one revision R (the first page fixes R, every later
 *      page of every prefix reads AT R, so the snapshot is consistent); emit
 *      `snapshot`; each prefix's revision := R.
 *  (2) open one Watch stream with a watcher per prefix, each from its own
 *      revision + 1.
 *  (3) events → emit `changes`; that watcher's revision := its last event's mod
 *      revision (NOT the header revision: during catch-up etcd sends batches
 *      whose header is the current head while older events are still to come).
 *      A progress notification (per watcher, or stream-wide for our periodic
 *      progress_request, sent only once every watcher has caught up) moves the
 *      revision to its header: etcd promises nothing changed up to there.
 *      The revision we report is the lowest over the prefixes.
 *  (4) stream error or end → back off (jittered, capped), go to (2): every
 *      watcher resumes from its own revision + 1, so nothing is lost or repeated.
 *  (5) compact_revision on any watcher (history we need is gone) → go to (1):
 *      a full re-list, which the consumer reconciles against, pruning what vanished.
 *  (6) a stream on which etcd stops answering our progress requests is treated
 *      as failed (4); list pages carry a deadline for the same reason.
 */
export class EtcdSource implements Source {
  private readonly abort = new AbortController();
  private readonly kv: KVClient;
  private readonly watchClient: WatchClient;
  private readonly ranges: { key: Buffer; end: Buffer }[];
  private pageSize: number;
  private running?: Promise<void>;
  private stream?: WatchStream;

  constructor(private readonly opts: EtcdSourceOptions) {
    // etcd3 exposes its generated gRPC clients; the pool handles auth and hosts.
    const pool = (opts.client as unknown as { pool: ConstructorParameters<typeof KVClient>[0] }).pool;
    this.kv = new KVClient(pool);
    this.watchClient = new WatchClient(pool);
    this.ranges = opts.prefixes.map((p) => ({ key: Buffer.from(p), end: prefixEnd(Buffer.from(p)) }));
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
    let revs: number[] = []; // empty = no consistent view yet: list first
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (revs.length === 0) {
          setState('listing');
          const snapshot = await this.list();
          revs = this.ranges.map(() => snapshot.revision);
          onEvent(snapshot);
        }
        setState('watching');
        const outcome = await this.watch(revs, onEvent, () => (failures = 0));
        if (outcome === 'closed') break;
        revs = []; // compacted: re-list
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const ms = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2);
        const reason = (err as Error).message;
        // Say which: a refused credential or permission needs an operator, an outage does not.
        const refused = /permission denied|authentication failed|user name is empty|invalid auth token|PermissionDenied|Unauthenticated/i.test(reason);
        this.opts.logger.warn(
          { err: reason, retryInMs: Math.round(ms), resumeFrom: revs.length ? Math.min(...revs) + 1 : 'list' },
          refused ? 'etcd refused our credentials or permissions (check etcd.auth / the role); keeping the last good state, retrying' : 'etcd unavailable; keeping the last good state, retrying',
        );
        setState('backoff', reason);
        await delay(ms, signal);
      }
    }
    setState('closed');
  }

  /** (1) A consistent snapshot of every prefix. `plan` uses it alone. */
  async list(): Promise<Extract<SourceEvent, { type: 'snapshot' }>> {
    const kvs: Kv[] = [];
    let revision = 0;
    for (const range of this.ranges) {
      let from = range.key;
      for (;;) {
        let res;
        try {
          res = await this.kv.range(
            { key: from, range_end: range.end, limit: this.pageSize, revision: revision || undefined },
            { deadline: Date.now() + LIST_PAGE_DEADLINE_MS },
          );
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
    }
    return { type: 'snapshot', revision, kvs };
  }

  /**
   * (2)–(5). `revs[i]` is prefix i's revision and is advanced in place.
   * Resolves 'compacted' when a re-list is needed, 'closed' on close(); rejects on stream failure.
   */
  private async watch(revs: number[], onEvent: (e: SourceEvent) => void, onProgress: () => void): Promise<'compacted' | 'closed'> {
    const stream = (await this.watchClient.watch()) as unknown as WatchStream;
    this.stream = stream;
    const { signal } = this.abort;
    const ids = new Map<string, number>(); // etcd watch id -> prefix index
    const reported = () => Math.min(...revs);
    let progressTimer: NodeJS.Timeout | undefined;
    let lastAnswer = Date.now();
    let catchUp: NodeJS.Timeout | undefined;
    // (3b) Each prefix has its own watcher, and etcd does not order events across
    // watchers. Events wait here until every watcher has confirmed (by an event or
    // a progress answer) that it is past their revision, then go out in revision
    // order: a cluster override and a global change are applied as etcd ordered them.
    const pending: { rev: number; change: Change }[] = [];
    const release = (head: number) => {
      const upTo = reported();
      pending.sort((a, b) => a.rev - b.rev); // stable: order within a revision is kept
      let n = 0;
      while (n < pending.length && pending[n]!.rev <= upTo) n++;
      if (n > 0) onEvent({ type: 'changes', revision: upTo, changes: pending.splice(0, n).map((p) => p.change), head });
      else onEvent({ type: 'progress', revision: upTo, head });
    };
    let onAbort = () => {};
    try {
      return await new Promise<'compacted' | 'closed'>((resolve, reject) => {
        stream.on('data', (res: IWatchResponse) => {
          lastAnswer = Date.now();
          if (Number(res.compact_revision) > 0) {
            this.opts.logger.warn({ compactRevision: Number(res.compact_revision), wanted: reported() + 1 }, 'etcd compacted past our revision; re-listing');
            return resolve('compacted');
          }
          if (res.canceled) return reject(new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
          // Creates are answered in the order they were sent.
          if (res.created) return void ids.set(res.watch_id, ids.size);
          if (res.events.length > 0) {
            const i = ids.get(res.watch_id);
            if (i === undefined) return;
            for (const change of res.events.map(toChange)) pending.push({ rev: revisionOf(change), change });
            revs[i] = pending[pending.length - 1]!.rev;
            onProgress();
            release(Number(res.header.revision));
            // The other prefixes' watchers only learn that nothing of theirs changed
            // from a progress notification: ask for one now (coalesced), so the
            // reported revision catches up in milliseconds, not at the next tick.
            if (revs.length > 1 && !catchUp) catchUp = setTimeout(() => ((catchUp = undefined), stream.write({ progress_request: {} })), 0);
            return;
          }
          const header = Number(res.header.revision);
          // Never backwards: a member that is behind (just back from a hang) answers
          // with its own, older head; taking it would replay events on the next resume.
          if (res.watch_id === STREAM_WIDE) revs.forEach((r, i) => (revs[i] = Math.max(r, header)));
          else if (ids.has(res.watch_id)) revs[ids.get(res.watch_id)!] = Math.max(revs[ids.get(res.watch_id)!]!, header);
          else return;
          onProgress();
          release(header);
        });
        stream.on('error', (err: Error) => reject(err));
        stream.on('end', () => (signal.aborted ? resolve('closed') : reject(new Error('watch stream ended'))));
        onAbort = () => resolve('closed');
        signal.addEventListener('abort', onAbort, { once: true });
        this.ranges.forEach((range, i) =>
          stream.write({ create_request: { key: range.key, range_end: range.end, start_revision: revs[i]! + 1, progress_notify: true } }),
        );
        // (6) A member that hangs (TCP up, nothing answered) would hold the watch
        // until gRPC keepalive gives up (~15 s). etcd answers every progress
        // request, so silence for a few of them means: drop this stream and
        // reconnect, possibly to another member.
        const every = this.opts.progressIntervalMs ?? 1000;
        if (every > 0) {
          progressTimer = setInterval(() => {
            const silentMs = Date.now() - lastAnswer;
            if (silentMs > Math.max(2500, 2.5 * every)) return reject(new Error(`etcd stopped answering on the watch stream for ${Math.round(silentMs / 1000)} s`));
            stream.write({ progress_request: {} });
          }, every);
        }
      });
    } finally {
      // Whatever is still pending was never handed on: every watcher resumes from
      // the last revision that was, so nothing is lost and nothing repeats.
      revs.fill(Math.min(...revs));
      clearInterval(progressTimer);
      clearTimeout(catchUp);
      signal.removeEventListener('abort', onAbort);
      stream.removeAllListeners();
      stream.on('error', () => undefined); // a late error on a stream we dropped is not news
      stream.end();
      this.stream = undefined;
    }
  }
}

interface WatchStream {
  end(): void;
  write(x: unknown): void;
  removeAllListeners(): void;
  on(e: string, f: (...a: any[]) => void): unknown;
}

function toKv(kv: IKeyValue): Kv {
  return { key: kv.key.toString('utf8'), value: kv.value, modRevision: Number(kv.mod_revision) };
}

function revisionOf(c: Change): number {
  return c.type === 'put' ? c.kv.modRevision : c.modRevision;
}

function toChange(ev: { type: string; kv: IKeyValue }): Change {
  return ev.type === 'Delete'
    ? { type: 'delete', key: ev.kv.key.toString('utf8'), modRevision: Number(ev.kv.mod_revision) }
    : { type: 'put', kv: toKv(ev.kv) };
}
