import type { IKeyValue, IWatchResponse } from 'etcd3';
import type { Logger } from '../log.js';
import { unchangedSince, unchangedSinceRanges } from './etcd-client.js';
import type { EtcdMembers } from './etcd-members.js';
import type { Change, Kv, SourceEvent } from './types.js';

/** (f) An idle stream's confirming reads (where they stand in for progress answers) at most this often. */
const IDLE_READ_MS = 5000;

/** etcd answers a progress_request with one response for the whole stream, watch id -1. */
const STREAM_WIDE = '-1';

export interface WatchSession {
  members: EtcdMembers;
  /** The member this stream runs on. */
  member: number;
  ranges: { key: Buffer; end: Buffer }[];
  /** Per prefix: every change up to here has been handed on. Advanced in place. */
  revs: number[];
  onEvent: (e: SourceEvent) => void;
  onProgress: () => void;
  logger: Logger;
  signal: AbortSignal;
  /** How often to check the stream (progress request or confirming reads), ms; 0 = never. */
  everyMs: number;
  /** Silence, or a change etcd committed and the stream did not deliver, for this long fails the stream. */
  stallMs: number;
  /** Check progress right after creating the watchers, not only every `everyMs` (a catch-up wants to know when it is done). */
  checkAtStart?: boolean;
}

/**
 * One Watch stream on one member: steps (2)–(6) of EtcdSource.
 *
 *  (a) one watcher per prefix, each from its own revision + 1, with `hasleader`
 *      (a member that loses its leader ends the stream: it may be partitioned);
 *  (b) events wait in `pending` until every watcher is known to be past their
 *      revision, then go out in revision order (etcd does not order events across
 *      watchers while one catches up); a watcher's revision := its last event's;
 *  (c) it learns that a watcher with no events is past a revision from a progress
 *      answer — or from a CONFIRMING READ (d) on an endpoint that never answers
 *      progress requests (etcd's gRPC proxy ignores them) or whose answers are not
 *      synchronised with its watchers: before etcd 3.4.31 / 3.5.13 a stream-wide
 *      answer carries the store's head even while a watcher on the stream is still
 *      catching up (etcd issue 15220), which released a later change of one prefix
 *      before earlier ones of another (an object showed a state etcd never had;
 *      docs/RELIABILITY.md). There the answers only prove the member alive, and
 *      one whose head is past a watcher's revision triggers a confirming read;
 *  (d) confirm: one read-only txn (one round trip) gives head H and, per prefix j
 *      behind the newest delivered revision (every prefix when none is behind), its
 *      count at H and at revs[j]; if no key of the
 *      prefix at H was modified after revs[j] and the count at H equals the count at
 *      revs[j], the prefix holds exactly what it held at revs[j] (every key at H then
 *      existed at revs[j] unchanged, and there are as many), so revs[j] := H.
 *      Otherwise changes are committed that the stream has not delivered yet.
 *      Same state is not no events: keys created and deleted in between leave the
 *      prefix as it was while its watcher, catching up, still holds their events
 *      (a create showed beside a later change of another prefix: RELIABILITY.md,
 *      bug 7). So a confirmation marks (revs[j], H] as a GAP of prefix j: its events
 *      there net to nothing and are dropped when they arrive (the prefix already
 *      shows its state at H); and it counts only if no event of the prefix arrived
 *      while the read was under way (else revs[j] moved and the read compared the
 *      wrong revision). Still open: a release at a revision inside a gap pairs the
 *      other prefixes' state there with this prefix's state at H, which lacks keys
 *      that lived only inside the gap (RELIABILITY.md, Not covered);
 *  (e) failure: silence for `stallMs` on a stream that answers progress, a read on
 *      the member failing (deadline, no leader), or committed changes undelivered
 *      for `stallMs` → reject; a compacted revision → resolve 'compacted';
 *  (f) an idle stream (nothing held, no prefix known behind) on an etcd whose
 *      progress answers are not synchronised makes its confirming read at most
 *      every IDLE_READ_MS (the answers still count as liveness): the resume point
 *      and applied revision then trail etcd's head by up to that much, and a
 *      watcher that stops delivering while idle is found within IDLE_READ_MS +
 *      `stallMs`. Behind a proxy (read mode) the read stays at every tick.
 */
export async function runWatch(s: WatchSession): Promise<'compacted' | 'closed'> {
  const { members, member, ranges, revs, logger, signal } = s;
  const version = await members.version(member, Math.max(1000, s.stallMs / 2)).catch(() => undefined);
  const synchronised = progressSynchronised(version);
  if (!synchronised) logger.debug({ member: members.name(member), version }, 'etcd answers watch progress requests before its watchers catch up; confirming watchers with linearizable reads');
  // Closed while asking the version: an abort listener added now would never fire.
  if (signal.aborted) return 'closed';
  const stream = await members.watch(member);
  const ids = new Map<string, number>(); // etcd watch id -> prefix index
  const pending: { rev: number; change: Change }[] = [];
  // Per prefix, in read mode: since when etcd holds changes up to `target` that the stream has not delivered.
  const behind: ({ since: number; target: number } | undefined)[] = ranges.map(() => undefined);
  let lastAnswer = Date.now();
  let progressAnswered = false;
  let readMode = false;
  let confirming: Promise<void> | undefined;
  let again = false;
  let lastRead = 0;
  /**
   * (f) Nothing waits on a confirming read (no event held, no prefix known to be
   * behind) and one was made less than IDLE_READ_MS ago: the periodic read waits.
   * On an etcd whose progress answers are not synchronised every daemon used to
   * read once a second whenever etcd's revision had moved — and in a fleet it
   * always has (status writes): N daemons, N linearizable reads a second, which
   * kept 1,000 daemons on one etcd 3.4.23 from getting ready within 180 s. (Not
   * behind a proxy, see the timer: there the pace cost the slowest of 500
   * instances 10-20 s more per change.)
   */
  const idleRecently = () => pending.length === 0 && !behind.some(Boolean) && Date.now() - lastRead < IDLE_READ_MS;
  /** runWatch returned: nothing more is handed on from this stream. */
  let ended = false;
  let timer: NodeJS.Timeout | undefined;
  let soon: NodeJS.Immediate | undefined;
  let onAbort = () => {};
  // (d) Per prefix, revision ranges (from, to] confirmed by a read whose events are still to be dropped.
  const gaps: { from: number; to: number }[][] = ranges.map(() => []);
  const delivered: number[] = ranges.map(() => 0); // event responses per prefix: did any arrive during a read?

  const release = (head: number) => {
    const upTo = Math.min(...revs);
    pending.sort((a, b) => a.rev - b.rev); // stable: order within a revision is kept
    let n = 0;
    while (n < pending.length && pending[n]!.rev <= upTo) n++;
    if (n > 0) s.onEvent({ type: 'changes', revision: upTo, changes: pending.splice(0, n).map((p) => p.change), head });
    else s.onEvent({ type: 'progress', revision: upTo, head });
  };

  type RangeRes = { count: string; kvs: IKeyValue[] };
  const txn = (ops: object[]) =>
    members.kv<{ header: { revision: string }; responses: { response_range: RangeRes }[] }>(member, 'txn', { compare: [], success: ops.map((request_range) => ({ request_range })), failure: [] }, Math.max(1000, s.stallMs / 2));

  /**
   * (d) for every prefix at once, in ONE read-only transaction (one round trip, one
   * revision H for all of it): per prefix its count at H, its count at revs[j], and
   * whether any key at H was modified after revs[j].
   */
  const confirmAll = (forEvent = false): Promise<void> => {
    if (confirming) {
      // Asked for an event that arrived while a read was out: that read's revisions
      // predate it, so it may not release it: ask again once it is back. Else that
      // event waited for the next periodic check (1 s). A periodic ask just joins:
      // re-asking for those kept a read out at all times under load.
      if (!forEvent) return confirming;
      again = true;
      return confirming.then(() => {
        if (!again || ended) return;
        again = false;
        return confirmAll(true);
      });
    }
    return (confirming = (async () => {
      try {
        lastRead = Date.now();
        const r0 = [...revs];
        const seen = [...delivered];
        // Only the prefixes behind the newest delivered revision hold a release back:
        // counting a prefix costs etcd a walk of its keys (twice), so a put under a
        // 110,000-key prefix does not pay for counting that prefix again. With none
        // behind (a periodic check), all of them: that is how the head is learnt.
        const top = Math.max(...r0);
        const behindTop = ranges.map((_, j) => r0[j]! < top);
        const asked = behindTop.some(Boolean) ? ranges.map((_, j) => j).filter((j) => behindTop[j]) : ranges.map((_, j) => j);
        const res = await txn(asked.flatMap((j) => unchangedSinceRanges(ranges[j]!, r0[j]!))).catch((err: Error) => {
          if (/future revision/i.test(err.message)) return undefined;
          throw err;
        });
        if (!res) return; // this member is behind a revision we already have: nothing to learn from it
        if (ended) return; // the stream is gone: what is pending comes again on the next one
        const head = Number(res.header.revision);
        asked.forEach((j, a) => {
          if (head <= r0[j]!) return;
          if (delivered[j] !== seen[j]) return; // the watcher moved meanwhile: the read's r0 is stale; it tells us next time
          if (unchangedSince(res.responses.slice(3 * a, 3 * a + 3).map((r) => r.response_range))) {
            gaps[j] = gaps[j]!.filter((g) => g.to >= r0[j]!); // below r0: delivered or dropped already
            const last = gaps[j]!.at(-1);
            if (last?.to === r0[j]) last.to = head;
            else gaps[j]!.push({ from: r0[j]!, to: head });
            revs[j] = Math.max(revs[j]!, head);
            behind[j] = undefined;
          } else if (revs[j]! < head) {
            behind[j] = { since: behind[j]?.since ?? Date.now(), target: head };
          }
        });
        s.onProgress();
        release(head);
      } finally {
        confirming = undefined;
      }
    })());
  };

  try {
    return await new Promise<'compacted' | 'closed'>((resolve, reject) => {
      const fail = (err: Error) => reject(err);
      const check = (why: string, forEvent = false) =>
        confirmAll(forEvent).catch((err: Error) => {
          if (/OutOfRange|compacted/i.test(`${err.name} ${err.message}`)) return resolve('compacted');
          fail(new Error(`${why}; a read on the same member failed too: ${err.message}`));
        });
      stream.on('data', (res: IWatchResponse) => {
        lastAnswer = Date.now();
        if (Number(res.compact_revision) > 0) {
          logger.warn({ compactRevision: Number(res.compact_revision), wanted: Math.min(...revs) + 1 }, 'etcd compacted past our revision; re-listing');
          return resolve('compacted');
        }
        if (res.canceled) return fail(new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
        if (res.created) return void ids.set(res.watch_id, ids.size); // creates are answered in the order sent
        if (res.events.length > 0) {
          const i = ids.get(res.watch_id);
          if (i === undefined) return;
          delivered[i]!++;
          // (d) Events inside a gap of this prefix net to nothing: dropped.
          const changes = res.events.map(toChange).filter((c) => !gaps[i]!.some((g) => revisionOf(c) > g.from && revisionOf(c) <= g.to));
          if (changes.length === 0) return void s.onProgress();
          for (const change of changes) pending.push({ rev: revisionOf(change), change });
          // Assigned, not max'd: an event below a revision we were told (an etcd 3.4 progress
          // answer sent before a catch-up finished) takes the resume point back to safety.
          revs[i] = pending[pending.length - 1]!.rev;
          gaps[i] = gaps[i]!.filter((g) => g.to > revs[i]!); // the watcher is past these
          if (behind[i] && revs[i]! >= behind[i]!.target) behind[i] = undefined;
          s.onProgress();
          release(Number(res.header.revision));
          // (b) Ask now whether the other watchers are past these events: once, after every
          // response already read (setImmediate; a 0 ms timeout waits a whole millisecond,
          // and this question is the larger part of put → file: docs/BENCHMARKS.md).
          if (ranges.length > 1 && pending.length > 0 && !soon) {
            soon = setImmediate(() => {
              soon = undefined;
              if (readMode || !synchronised) void check('confirming reads', true);
              else stream.write({ progress_request: {} });
            });
          }
          // Held while the question is out: the consumer may prepare what they would
          // change (its work is queued behind the question, so it does not delay it).
          // Not in read mode (behind a gRPC proxy): there a hold lasts as long as a read
          // through the proxy, and with preparations the slowest of 500 instances took
          // 20-25 s instead of 5-12 s per change (docs/BENCHMARKS.md); a direct stream's
          // hold is one round trip.
          const releasedTo = Math.min(...revs);
          const held = pending.length > 0 && !readMode ? changes.filter((c) => revisionOf(c) > releasedTo) : [];
          if (held.length > 0) s.onEvent({ type: 'held', changes: held });
          return;
        }
        // (c) Never backwards: a member that is behind answers with its own, older head.
        const header = Number(res.header.revision);
        if (res.watch_id === STREAM_WIDE) {
          progressAnswered = true;
          // Alive, but its revision may run ahead of a watcher (c): when etcd has anything
          // past a watcher, a read tells whether it is that watcher's; when not, nothing is
          // undelivered and a quiet daemon asks etcd for no count (was: a read every `everyMs`,
          // ~0.5 % of a core idle here, and two counts of every prefix for etcd).
          if (!synchronised) {
            if (header > Math.min(...revs) && !idleRecently()) return void check('confirming reads');
            // Alive, and nothing waits on the answer: said without a read (the read comes at the idle pace).
            s.onProgress();
            return release(Math.min(...revs));
          }
          revs.forEach((r, k) => (revs[k] = Math.max(r, header)));
        } else if (ids.has(res.watch_id)) revs[ids.get(res.watch_id)!] = Math.max(revs[ids.get(res.watch_id)!]!, header);
        else return;
        s.onProgress();
        release(header);
      });
      stream.on('error', (err: Error) => fail(new Error(err.message))); // a lost auth token: EtcdSource tells the members
      stream.on('end', () => (signal.aborted ? resolve('closed') : fail(new Error('watch stream ended'))));
      onAbort = () => resolve('closed');
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) return resolve('closed'); // aborted while the stream was being opened
      ranges.forEach((range, i) =>
        stream.write({ create_request: { key: range.key, range_end: range.end, start_revision: revs[i]! + 1, progress_notify: true } }),
      );
      if (s.checkAtStart) {
        soon = setImmediate(() => {
          soon = undefined;
          if (!synchronised) void check('confirming reads');
          else stream.write({ progress_request: {} });
        });
      }
      // (e) A hung member keeps TCP up and answers nothing; a gRPC proxy answers events but never progress.
      if (s.everyMs > 0) timer = setInterval(() => {
        const silentMs = Date.now() - lastAnswer;
        if (readMode || !synchronised) {
          const stuck = behind.some((b) => b !== undefined && Date.now() - b.since > s.stallMs);
          if (stuck) return fail(new Error(`etcd committed changes the watch stream did not deliver for ${Math.round(s.stallMs / 1000)} s`));
        }
        // Behind a proxy the reads stay at every tick: there they are the only sign of life, and
        // a watcher the overloaded proxy is slow to serve is found behind (and re-listed) sooner.
        if (readMode) return void check('confirming reads');
        if (silentMs <= s.stallMs) {
          stream.write({ progress_request: {} }); // liveness; progress where (c) allows, else a read when etcd is ahead
          return;
        }
        if (progressAnswered) return fail(new Error(`etcd stopped answering on the watch stream for ${Math.round(silentMs / 1000)} s`));
        // Never answered on this stream: a silent member, or an endpoint without progress answers. A read tells which.
        readMode = true;
        void check('no answer to watch progress requests');
        logger.info({ member: members.name(member) }, 'the etcd endpoint does not answer watch progress requests (a gRPC proxy?); confirming watchers with linearizable reads');
      }, s.everyMs);
    });
  } finally {
    // Whatever is still pending was never handed on: every watcher resumes from
    // the last revision that was, so nothing is lost and nothing repeats.
    ended = true;
    revs.fill(Math.min(...revs));
    clearInterval(timer);
    clearImmediate(soon);
    signal.removeEventListener('abort', onAbort);
    stream.removeAllListeners();
    stream.on('error', () => undefined); // a late error on a stream we dropped is not news
    stream.cancel?.(); // not just end(): a half-closed stream stays open on the server
  }
}

/**
 * (c) Does this etcd answer a progress request only once every watcher on the
 * stream has caught up? From 3.6, and from the 3.5 and 3.4 patch releases that
 * carry both fixes (etcd PRs 15237 and 17557: 3.5.13, 3.4.31). Unknown: no.
 */
export function progressSynchronised(version: string | undefined): boolean {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (major !== 3) return major > 3;
  if (minor >= 6) return true;
  if (minor === 5) return patch >= 13;
  if (minor === 4) return patch >= 31;
  return false;
}

/**
 * The value is copied out of the gRPC message (a small copy lands in Node's
 * shared 8 KiB pool): a view would keep the whole response alive as long as the
 * key is held — a list page of ~120 KB for each of its keys, ~19 MiB of dead
 * message bytes kept for 110,000 keys.
 */
function toKv(kv: IKeyValue): Kv {
  return { key: kv.key.toString('utf8'), value: Buffer.from(kv.value), modRevision: Number(kv.mod_revision) };
}

function revisionOf(c: Change): number {
  return c.type === 'put' ? c.kv.modRevision : c.modRevision;
}

function toChange(ev: { type: string; kv: IKeyValue }): Change {
  return ev.type === 'Delete'
    ? { type: 'delete', key: ev.kv.key.toString('utf8'), modRevision: Number(ev.kv.mod_revision) }
    : { type: 'put', kv: toKv(ev.kv) };
}

export { toKv };
