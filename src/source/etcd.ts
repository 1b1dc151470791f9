import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { Logger } from '../log.js';
import { prefixEnd } from './etcd-client.js';
import { EtcdMembers } from './etcd-members.js';
import { isRefusal } from './etcd-errors.js';
import { MemberFailed, runWatch, toKv } from './etcd-watch.js';
import type { ConnectionState, Kv, Source, SourceEvent } from './types.js';

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
  /** How often to check the watch stream (progress request, or confirming reads behind a proxy), ms. */
  progressIntervalMs?: number;
  /** A stream silent (or holding back committed changes) this long is failed over to another member, ms. */
  stallMs?: number;
  delay?: (ms: number, signal: AbortSignal) => Promise<unknown>;
}

/** A list page that takes longer is abandoned and retried on another member. */
const LIST_PAGE_DEADLINE_MS = 5_000;
/** During an outage, one warning at its start and then at most one per this many ms. */
const OUTAGE_REPEAT_MS = 30_000;

/**
 * List + watch, the known-good way (client-node's ListWatch), with the resume
 * revisions owned here rather than by etcd3's high-level watcher, which moves
 * its revision to the server's head on reconnect and so loses a catch-up backlog:
 *
 *  (1) list every prefix at one revision R (the first page is a linearizable read
 *      and fixes R, every later page of every prefix reads AT R, so the snapshot is
 *      consistent); emit `snapshot`; each prefix's revision := R. (1b) A list below a
 *      revision already handed on is refused and retried, never applied.
 *  (2) open one Watch stream, on a member WE choose (EtcdMembers: suspected members
 *      last, `hasleader` on every call), with a watcher per prefix, each from its own
 *      revision + 1.
 *  (3) events → emit `changes` in revision order across prefixes; a prefix's
 *      revision moves with its events, and with progress answers or confirming
 *      reads (etcd-watch.ts) — never from a header that is not known to be
 *      linearizable or a promise of the stream itself. The revision we report is
 *      the lowest over the prefixes.
 *  (4) stream error, end, silence or undelivered committed changes → suspect the
 *      member, back off (jittered, capped), go to (2) on another member: every
 *      watcher resumes from its own revision + 1, so nothing is lost or repeated.
 *  (5) compact_revision on any watcher (history we need is gone) → go to (1):
 *      a full re-list, which the consumer reconciles against, pruning what vanished.
 *  (6) list pages carry a deadline; a failed list suspects its member too.
 */
export class EtcdSource implements Source {
  private readonly abort = new AbortController();
  private readonly members: EtcdMembers;
  private readonly ranges: { key: Buffer; end: Buffer }[];
  private pageSize: number;
  private running?: Promise<void>;

  constructor(private readonly opts: EtcdSourceOptions) {
    this.members = new EtcdMembers(opts.client);
    this.ranges = opts.prefixes.map((p) => ({ key: Buffer.from(p), end: prefixEnd(Buffer.from(p)) }));
    this.pageSize = opts.pageSize ?? 1000;
  }

  start(onEvent: (event: SourceEvent) => void): void {
    this.running = this.loop(onEvent);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async loop(onEvent: (event: SourceEvent) => void): Promise<void> {
    const { signal } = this.abort;
    const setState = (state: ConnectionState, detail?: string) => onEvent({ type: 'state', state, detail });
    const backoff = this.opts.backoff ?? { initialMs: 100, maxMs: 1000 };
    const delay = this.opts.delay ?? ((ms, s) => sleep(ms, undefined, { signal: s }).catch(() => undefined));
    let revs: number[] = []; // empty = no consistent view yet: list first
    let failures = 0;
    const outage = { since: 0, lastWarn: 0, quiet: 0, refused: false };
    let handedOn = 0; // the highest revision passed to onEvent, across re-lists
    const emit = onEvent;
    onEvent = (e) => {
      if (e.type === 'snapshot' || e.type === 'changes' || e.type === 'progress') handedOn = Math.max(handedOn, e.revision);
      emit(e);
    };
    while (!signal.aborted) {
      let member: number | undefined;
      try {
        if (revs.length === 0) {
          setState('listing'); // (1)
          member = this.members.pick();
          const snapshot = await this.list(member);
          // (1b) Never backwards: a linearizable list cannot be older than what we handed
          // on; if it is (etcd restored from a backup), applying it would undo newer state.
          if (snapshot.revision < handedOn) throw new Error(`etcd listed revision ${snapshot.revision}, below revision ${handedOn} already handed on; not applying it`);
          revs = this.ranges.map(() => snapshot.revision);
          onEvent(snapshot);
        }
        setState('watching'); // (2)
        member = this.members.pick();
        const outcome = await runWatch({
          members: this.members,
          member,
          ranges: this.ranges,
          revs,
          onEvent,
          onProgress: () => (failures = 0),
          logger: this.opts.logger,
          signal,
          everyMs: this.opts.progressIntervalMs ?? 1000,
          stallMs: this.opts.stallMs ?? 2500,
        });
        if (outcome === 'closed') break;
        revs = []; // (5) compacted: re-list
      } catch (err) {
        if (signal.aborted) break;
        // (4) Another member next time; a member that failed itself also loses its connection.
        if (member !== undefined) this.members.suspect(member, err instanceof MemberFailed);
        failures++;
        const ms = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2);
        const reason = (err as Error).message;
        // Say which: a refused credential or permission needs an operator, an outage does not.
        const refused = isRefusal(err);
        // One warning when an outage starts (or turns from unreachable to refused or back), then one every
        // OUTAGE_REPEAT_MS with how many retries failed meanwhile: a long outage must
        // not bury the log under a line a second. `handedOn`, not the per-prefix
        // resume points: those trail it and would look like a revision going back.
        const fields = { err: reason, member: member === undefined ? undefined : this.members.name(member), retryInMs: Math.round(ms), appliedUpTo: handedOn || undefined, resume: revs.length ? 'watch' : 'list' };
        const now = Date.now();
        if (failures === 1 || refused !== outage.refused) {
          outage.since = failures === 1 ? now : outage.since;
          outage.refused = refused;
          outage.lastWarn = now;
          outage.quiet = 0;
          this.opts.logger.warn(fields, refused ? 'etcd refused our credentials or permissions (check etcd.auth / the role); keeping the last good state, retrying' : 'etcd unavailable; keeping the last good state, retrying');
        } else if (now - outage.lastWarn >= OUTAGE_REPEAT_MS) {
          const seconds = Math.round((now - outage.since) / 1000);
          this.opts.logger.warn({ ...fields, failures, seconds }, `etcd still ${refused ? 'refusing our credentials or permissions' : 'unreachable'} after ${seconds} s (${outage.quiet + 1} more failed retries since the last warning); keeping the last good state`);
          outage.lastWarn = now;
          outage.quiet = 0;
        } else {
          outage.quiet++;
          this.opts.logger.debug(fields, 'etcd retry failed');
        }
        setState('backoff', reason);
        await delay(ms, signal);
      }
    }
    setState('closed');
  }

  /** (1) A consistent snapshot of every prefix. `plan` uses it alone. */
  async list(member = this.members.pick()): Promise<Extract<SourceEvent, { type: 'snapshot' }>> {
    const kvs: Kv[] = [];
    let revision = 0;
    for (const range of this.ranges) {
      let from = range.key;
      for (;;) {
        let res;
        try {
          res = await this.members.kv<{ header: { revision: string }; kvs: IKeyValue[]; more: boolean }>(
            member,
            'range',
            { key: from, range_end: range.end, limit: this.pageSize, revision: revision || undefined },
            LIST_PAGE_DEADLINE_MS,
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
}
