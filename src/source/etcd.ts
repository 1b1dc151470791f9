import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { Logger } from '../log.js';
import { prefixEnd } from './etcd-client.js';
import { EtcdMembers } from './etcd-members.js';
import { isOutOfRange, isRefusal } from './etcd-errors.js';
import { runWatch, toKv } from './etcd-watch.js';
import type { ConnectionState, Kv, Source, SourceEvent } from './types.js';

/** How a start went: resumed from the local snapshot, listed, or served offline from it first. */
export type StartMode = 'snapshot-resume' | 'list' | 'offline';

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
  /** The local snapshot (state/snapshot.ts): etcd's keys at `revision`, as this daemon last applied them. */
  resume?: { revision: number; kvs: Kv[]; savedAt: string };
  /** With `resume`: etcd not answering within this long at start → serve the snapshot offline, ms. */
  offlineAfterMs?: number;
  /** Told how the start went (once per mode reached). */
  onStartMode?: (mode: StartMode) => void;
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
 *
 * With a local snapshot at revision S (`resume`), before (1):
 *  (0a) ask etcd (deadline `offlineAfterMs`) for its head H, whether it still
 *       holds S (a read at S; compacted → OutOfRange), and whether its state at S
 *       is the snapshot's — per prefix, the same count, no key modified after the
 *       snapshot's newest modification M, and the key modified at M the same
 *       (value and mod revision). (The argument of etcd-watch.ts (d): same count
 *       and nothing newer than M means the same keys.) An etcd restored from a
 *       backup and written to since can reach S with another history: it fails
 *       this check and is listed;
 *  (0b) no answer → emit the snapshot as `offline` (the daemon serves it, prunes
 *       nothing), state `offline`, and keep asking with backoff;
 *  (0c) S held → watch every prefix from S + 1, applying the catch-up to the
 *       snapshot's keys HERE, and emit one `snapshot` at the first revision ≥ H:
 *       the consumer sees one consistent state, never the older one first, and
 *       etcd serves no list;
 *  (0d) compacted past S → (1); H < S, or another state at S (etcd restored from
 *       a backup, or another etcd) → warn, (1), and the list is a `rebase`:
 *       that etcd's history is the truth now.
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
    // Not kept in the options: the loaded keys would stay alive after their replacement.
    let resume = this.opts.resume;
    this.opts.resume = undefined;
    let offline: number | undefined; // the snapshot revision served offline, until etcd answers
    let rebase = false;
    let listed = false;
    let catchUp: { keys: Map<string, Kv>; target: number } | undefined;
    const setState = (state: ConnectionState, detail?: string) => (offline === undefined || state === 'closed') && emit({ type: 'state', state, detail });
    while (!signal.aborted) {
      let member: number | undefined;
      try {
        if (resume) {
          member = this.members.pick(); // (0a)
          const { head, held } = await this.probe(member, resume, offline === undefined ? (this.opts.offlineAfterMs ?? 1000) : LIST_PAGE_DEADLINE_MS);
          const s = resume;
          resume = undefined;
          const wasOffline = offline !== undefined;
          offline = undefined;
          if (head < s.revision || held === 'differs') {
            // (0d)
            rebase = wasOffline;
            const why = head < s.revision ? "etcd's revision is below the local snapshot's" : "etcd's state at the local snapshot's revision is not the snapshot's";
            this.opts.logger.warn({ snapshotRevision: s.revision, etcdRevision: head }, `${why} (etcd restored from a backup, or another etcd?); not resuming from the snapshot; listing, and etcd's state is applied as it is`);
          } else if (held === 'compacted') {
            this.opts.logger.info({ snapshotRevision: s.revision, etcdRevision: head }, 'etcd compacted past the local snapshot revision; listing');
          } else {
            // (0c)
            this.opts.logger.info({ snapshotRevision: s.revision, etcdRevision: head, keys: s.kvs.length }, 'etcd still holds the local snapshot revision; resuming the watch from it, no full list');
            this.opts.onStartMode?.('snapshot-resume');
            revs = this.ranges.map(() => s.revision);
            catchUp = { keys: new Map(s.kvs.map((kv) => [kv.key, kv])), target: head };
            if (head <= s.revision) this.caughtUp(catchUp, s.revision, onEvent), (catchUp = undefined);
          }
        }
        if (revs.length === 0) {
          catchUp = undefined;
          setState('listing'); // (1)
          member = this.members.pick();
          const snapshot = await this.list(member);
          // (1b) Never backwards: a linearizable list cannot be older than what we handed
          // on; if it is (etcd restored from a backup), applying it would undo newer state.
          if (snapshot.revision < handedOn) throw new Error(`etcd listed revision ${snapshot.revision}, below revision ${handedOn} already handed on; not applying it`);
          revs = this.ranges.map(() => snapshot.revision);
          if (rebase) snapshot.rebase = true;
          rebase = false;
          if (!listed) this.opts.onStartMode?.('list');
          listed = true;
          onEvent(snapshot);
        }
        setState('watching'); // (2)
        member = this.members.pick();
        const cu = catchUp;
        const outcome = await runWatch({
          members: this.members,
          member,
          ranges: this.ranges,
          revs,
          // (0c) the catch-up goes into the snapshot's keys until it reaches etcd's head at the probe
          onEvent: !cu
            ? onEvent
            : (e) => {
                if (catchUp === cu && e.type === 'held') return; // the catch-up shows nothing before it is done
                if (catchUp !== cu || (e.type !== 'changes' && e.type !== 'progress')) return onEvent(e);
                if (e.type === 'changes') for (const c of e.changes) c.type === 'put' ? cu.keys.set(c.kv.key, c.kv) : cu.keys.delete(c.key);
                if (e.revision >= cu.target) this.caughtUp(cu, e.revision, onEvent), (catchUp = undefined);
              },
          checkAtStart: cu !== undefined,
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
        if (resume && offline === undefined) {
          // (0b)
          offline = resume.revision;
          emit({ type: 'state', state: 'offline', detail: (err as Error).message });
          this.opts.logger.warn(
            { snapshotRevision: resume.revision, savedAt: resume.savedAt, keys: resume.kvs.length, err: (err as Error).message },
            'etcd not reachable at start; serving from the local snapshot (nothing is pruned) and retrying; the watch resumes from the snapshot revision when etcd answers',
          );
          this.opts.onStartMode?.('offline');
          emit({ type: 'snapshot', revision: resume.revision, kvs: resume.kvs, offline: true });
        }
        // (4) Another member next time. A lost auth token (etcd restarted: its simple
        // tokens are gone), whichever call or stream said so, is fetched anew.
        this.members.noteError(err as Error);
        if (member !== undefined) this.members.suspect(member);
        failures++;
        const ms = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures - 1, 10)) * (0.5 + Math.random() / 2);
        const reason = (err as Error).message;
        // Say which: a refused credential or permission needs an operator, an outage does not.
        const refused = isRefusal(err);
        // One warning when an outage starts (or turns from unreachable to refused or back), then one every
        // OUTAGE_REPEAT_MS with how many retries failed meanwhile: a long outage must
        // not bury the log under a line a second. `handedOn`, not the per-prefix
        // resume points: those trail it and would look like a revision going back.
        const fields = { err: reason, member: member === undefined ? undefined : this.members.name(member), retryInMs: Math.round(ms), appliedUpTo: handedOn || undefined, resume: resume ? 'snapshot' : revs.length ? 'watch' : 'list' };
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

  /** (0c) The catch-up reached etcd's head: one consistent snapshot, as a list would give. */
  private caughtUp(cu: { keys: Map<string, Kv> }, revision: number, onEvent: (e: SourceEvent) => void): void {
    this.opts.logger.info({ revision, keys: cu.keys.size }, 'caught up from the local snapshot; reconciling everything');
    onEvent({ type: 'snapshot', revision, kvs: [...cu.keys.values()], resumed: true });
    cu.keys.clear(); // the watch's handler holds `cu` until the stream ends: not 110,000 entries with it
  }

  /** (0a) etcd's head; whether it still holds the snapshot's revision, and holds the snapshot's state there. */
  private async probe(member: number, snap: { revision: number; kvs: Kv[] }, deadlineMs: number): Promise<{ head: number; held?: 'yes' | 'compacted' | 'differs' }> {
    type Range = { header: { revision: string }; count: string; kvs: IKeyValue[] };
    const read = (req: object) => this.members.kv<Range>(member, 'range', req, deadlineMs);
    const revision = snap.revision;
    const first = this.ranges[0]!;
    const head = Number((await read({ key: first.key, range_end: first.end, count_only: true })).header.revision);
    if (head < revision) return { head };
    try {
      for (const [j, { key, end }] of this.ranges.entries()) {
        const mine = snap.kvs.filter((kv) => kv.key.startsWith(this.opts.prefixes[j]!));
        const newest = mine.reduce<Kv | undefined>((a, kv) => (!a || kv.modRevision > a.modRevision ? kv : a), undefined);
        const at = await read({ key, range_end: end, count_only: true, revision });
        if (Number(at.count) !== mine.length) return { head, held: 'differs' };
        if (!newest) continue;
        const newer = await read({ key, range_end: end, keys_only: true, limit: 1, min_mod_revision: newest.modRevision + 1, revision });
        if (newer.kvs.length > 0) return { head, held: 'differs' };
        const same = (await read({ key: Buffer.from(newest.key), revision })).kvs[0];
        if (!same || Number(same.mod_revision) !== newest.modRevision || !same.value.equals(newest.value)) return { head, held: 'differs' };
      }
      return { head, held: 'yes' };
    } catch (err) {
      if (isOutOfRange(err)) return { head, held: 'compacted' };
      throw err;
    }
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
