import { performance } from 'node:perf_hooks';
import { buildObject, type BuildContext } from '../desired/build.js';
import { KeyStore } from '../desired/store.js';
import type { DesiredObject } from '../desired/types.js';
import { isSealed, Keyspace, parseObjectId, printable, type ObjectId } from '../keyspace.js';
import type { Change, SourceEvent } from '../source/types.js';
import type { ReconcileEvent, ReconcileObserver, ReconcileStats } from './events.js';
import { ResyncPasses } from './resync.js';
import { SinkFanout } from './fanout.js';
import { DeleteGuard, type Hold } from './guard.js';
import type { ReconcilerOptions } from './options.js';
import type { Sink } from '../sink/types.js';
import { ProblemReporter } from './problems.js';
import { Progress } from './progress.js';
import { WorkQueue } from './queue.js';
import { SinkRetries } from './retries.js';
import { SecretCache, zeroUnless } from './secrets.js';

export type { ReconcileStats } from './events.js';

/** How often the first full sync logs how far along it is. */
const COLD_START_LOG_MS = 3000;
/** (2) Workers during the first sync (at least): its writes share their syncs, so more in flight means fewer syncs (sink/sync-batch.ts). */
const FIRST_SYNC_CONCURRENCY = 256;

/**
 * A snapshot's objects in the order the workers take them: sealed and unsealed
 * alternating. In key order every config map comes before every secret, and a
 * secret waits for its envelope to open (on the worker thread, when many do:
 * envelope/open-pool.ts): the secrets' opens then ran while this thread had
 * nothing else to do. Alternating, they overlap this thread's work on the config
 * maps. Order within one snapshot means nothing: every object is marked at once.
 */
export function interleaveSealed(ids: Iterable<ObjectId>): ObjectId[] {
  const sealed: ObjectId[] = [];
  const plain: ObjectId[] = [];
  for (const id of ids) {
    const ref = parseObjectId(id);
    (ref && isSealed(ref.kind) ? sealed : plain).push(id);
  }
  const out: ObjectId[] = [];
  for (let i = 0; i < Math.max(sealed.length, plain.length); i++) {
    if (i < sealed.length) out.push(sealed[i]!);
    if (i < plain.length) out.push(plain[i]!);
  }
  return out;
}

/**
 * (9) Held changes beyond this many are not prepared ahead: a large transaction
 * or a catch-up is not what waits on one change's latency, and preparing many
 * payload dirs would compete with the applies for the disk.
 */
const SPECULATE_MAX_CHANGES = 16;

/** 10000 → "10,000": counts in log messages are read by people. */
const count = (n: number): string => n.toLocaleString('en-US');
export type { ReconcilerOptions } from './options.js';

/**
 * The one loop: desired vs actual → minimal changes. The daemon, `plan` and the
 * tests all go through it.
 *
 *  (1) a source event updates the KeyStore and marks the objects it touched dirty;
 *      a snapshot marks every object dirty and asks for a prune;
 *  (2) workers take dirty objects one at a time (at most `concurrency` at once,
 *      FIRST_SYNC_CONCURRENCY until the first sync is done; never two for one object), open their secrets and rebuild them (pure core):
 *      a huge object occupies one worker while the others keep flowing;
 *  (3) a changed object goes to every sink; one whose hash did not change is
 *      skipped unless forced (drift hint, resync, retry);
 *  (4) absent objects are removed; once a snapshot's objects are all done, sinks
 *      are listed and whatever they own that is neither desired nor held is
 *      pruned — only ever from a complete snapshot, so an outage prunes nothing;
 *  (5) a held object (bad @meta, over a limit) keeps its last good state
 *      everywhere; a secret that does not open keeps its last good value while
 *      the object's other keys go live; a failing sink write is reported and
 *      retried with backoff, the rest go on;
 *  (6) the applied revision (Progress) is the store's revision less whatever is
 *      still dirty or in flight: it never runs ahead of what the sinks have;
 *  (7) a batch that would remove too many objects at once is held by the
 *      mass-delete guard (guard.ts) until an operator confirms;
 *  (8) an `offline` snapshot (the local one, etcd unreachable at start) is served
 *      like any other but prunes nothing and is not judged by the guard: the
 *      snapshot from etcd that follows does both;
 *  (9) changes the source still holds (`held`) let the sinks prepare an update
 *      ahead (`speculate`); only the `changes` event applies anything.
 */
export class Reconciler {
  readonly store: KeyStore;
  readonly progress = new Progress();
  readonly stats: ReconcileStats = { invalidInputs: 0, decryptFailures: 0, sinkErrors: 0, writes: 0 };

  private readonly desired = new Map<ObjectId, DesiredObject>();
  private readonly held = new Set<ObjectId>();
  /** (9) Objects a sink was asked to prepare, until their next reconcile. */
  private readonly speculated = new Set<ObjectId>();
  /** Objects whose desired state was built from the store as it is now: a drift hint or resync only re-checks the sinks. */
  private readonly upToDate = new Set<ObjectId>();
  /** Objects a sink held before our first snapshot: their last good secrets may be only there. */
  private seenInSinks?: Set<ObjectId>;
  /**
   * Each stable sink's listing at the first snapshot (Sink.stableListing), for the
   * first sync's prune: what it can remove is there (whatever appeared since is
   * ours, and desired), and a second listing of 20,000 dirs was ~0.15 s of a
   * restart. Later prunes, and the other sinks, list afresh.
   */
  private startListing?: Map<Sink, ObjectId[]>;
  private readonly queue: WorkQueue;
  private readonly secrets: SecretCache;
  private readonly retries: SinkRetries;
  private readonly sinks: SinkFanout;
  private readonly problems: ProblemReporter;
  private readonly buildContext: BuildContext;
  private readonly observers: ReconcileObserver[];
  private pruneFrom?: number;
  /** A resync's prune: after its checks, holding no revision back (unlike `pruneFrom`). */
  private pruneAfterChecks = false;
  private resyncPending = false;
  /** A resync asking the sinks which objects to check. */
  private readonly passes: ResyncPasses;
  private sawSnapshot = false;
  private idleWaiters: (() => void)[] = [];
  private readonly guard: DeleteGuard;
  private readonly keyspace: Keyspace;
  private coldStartTimer?: NodeJS.Timeout;
  /** The first snapshot waits for the sinks' listing (what is on disk decides the guard). */
  private starting?: Promise<void>;

  constructor(private readonly opts: ReconcilerOptions) {
    this.store = new KeyStore(opts.prefix, opts.cluster);
    this.keyspace = new Keyspace(opts.prefix.replace(/\/$/, ''));
    this.guard = new DeleteGuard(opts.guard ?? { enabled: false, maxDeletePercent: 100, minObjects: Infinity }, {
      cluster: opts.cluster,
      logger: opts.logger,
      emit: (e) => this.emit(e),
      invalid: (p) => this.problems.report(p),
    });
    this.observers = opts.observers ?? [];
    this.problems = new ProblemReporter(this.stats, opts.logger, (e) => this.emit(e));
    this.secrets = new SecretCache(opts.openSecret);
    this.retries = new SinkRetries({ baseMs: opts.retryMs ?? 1000, maxMs: opts.retryMaxMs ?? 300_000, logger: opts.logger, emit: (e) => this.emit(e), retry: (id) => this.markDrift(id) });
    this.sinks = new SinkFanout({ sinks: opts.sinks, logger: opts.logger, retries: this.retries, stats: this.stats, problems: this.problems, emit: (e) => this.emit(e) });
    this.passes = new ResyncPasses({
      sinks: opts.sinks,
      logger: opts.logger,
      applied: () => this.upToDateObjects(),
      isApplied: (id) => this.upToDate.has(id) && this.desired.has(id),
      check: (suspect, deep) => {
        // In the queue's check lane: behind every change, one at a time, holding no revision.
        for (const id of this.store.objects.keys()) if (suspect(id)) this.queue.check(id);
        for (const id of this.desired.keys()) if (!this.store.objects.has(id) && suspect(id)) this.queue.check(id);
        if (deep) this.pruneAfterChecks = true;
        this.queue.requestIdle();
        this.pump();
      },
    });
    this.buildContext = { cluster: opts.cluster, labels: opts.labels, secret: () => ({ error: 'secret not opened' }), limits: opts.limits };
    this.queue = new WorkQueue({
      // A first sync writes thousands of new dirs that share their syncs (FileSink, bulk): the more in flight, the fewer syncs.
      concurrency: () => (this.progress.synced ? (opts.concurrency ?? 8) : Math.max(opts.concurrency ?? 8, FIRST_SYNC_CONCURRENCY)),
      work: (id, since) =>
        this.reconcileObject(id, since).finally(() => {
          if (!this.progress.synced) this.progress.firstSync.done++;
        }),
      onError: (id, err) => opts.logger.error({ object: id, err: (err as Error).message }, 'reconcile of one object failed; it is retried on its next change or resync'),
      onIdle: () => this.idle(),
    });
  }

  /** (1) */
  handle = (event: SourceEvent): void => {
    if (event.type === 'held') return this.speculate(event.changes);
    const before = event.type === 'snapshot' && event.rebase ? 0 : this.progress.received;
    this.progress.noteEvent(event);
    if (event.type === 'snapshot') {
      const { dirty, invalid } = this.store.reset(event.kvs);
      // A complete listing says which bad keys are still there: the rest are fixed.
      this.problems.clearWhere((owner) => owner.startsWith('key:'));
      for (const p of invalid) this.problems.report(p, undefined, `key:${p.path}`);
      this.release(event.kvs.filter((kv) => kv.key === this.keyspace.releaseKey(this.opts.cluster)).map((kv) => kv.value));
      const first = !this.sawSnapshot;
      this.sawSnapshot = true;
      if (first) this.startColdStartLog();
      // (8) the local snapshot served offline: nothing is pruned or judged removed until etcd confirms.
      if (!event.offline) this.pruneFrom = Math.min(this.pruneFrom ?? before, before);
      const afterListing = () => {
        // (7) what a re-list would remove: objects we hold, or (at start) that a sink holds.
        const gone = new Set([...this.desired.keys(), ...(this.seenInSinks ?? [])].filter((id) => !this.store.objects.has(id)));
        if (!event.offline) this.guard.check([...gone], this.materialized(), event.revision);
        this.queue.requestIdle();
        for (const id of interleaveSealed(dirty)) this.upToDate.delete(id), this.queue.mark(id, before, false);
        this.pump();
      };
      if (first) this.starting = this.noteSinkContents().then(afterListing);
      else if (!this.seenInSinks) this.starting = this.starting!.then(afterListing); // the guard needs the listing (an offline snapshot came first)
      else afterListing();
    } else if (event.type === 'changes') {
      const { dirty, invalid, removed, templates } = this.store.apply(event.changes);
      // A template changed: the idle step (where templates render) runs even if no object did.
      if (templates) this.queue.requestIdle();
      // A bad key rewritten or deleted is fixed unless it is still bad (reported again just below).
      for (const c of event.changes) this.problems.setFor(`key:${printable(this.keyspace.relative(c.type === 'put' ? c.kv.key : c.key))}`, []);
      for (const p of invalid) this.problems.report(p, undefined, `key:${p.path}`);
      const release = this.keyspace.releaseKey(this.opts.cluster);
      this.release(event.changes.flatMap((c) => (c.type === 'put' && c.kv.key === release ? [c.kv.value] : [])));
      // (7) per etcd revision: one transaction that removes many objects is a mass delete;
      // a catch-up after an outage that replays many small deletes is not.
      const removedAt = new Map<number, ObjectId[]>();
      for (const [id, rev] of removed) {
        if (!this.desired.has(id)) continue;
        const ids = removedAt.get(rev) ?? [];
        ids.push(id);
        removedAt.set(rev, ids);
      }
      for (const [rev, ids] of removedAt) this.guard.check(ids, this.materialized(), rev);
      const now = performance.now();
      for (const id of dirty) this.upToDate.delete(id), this.queue.mark(id, before, false, now);
    }
    this.advance();
    this.pump();
  };

  /**
   * (9) Changes the source holds until its other watchers are known past them
   * (SourceEvent 'held'): the objects they would change are built as they would
   * be, and the sinks may prepare them (the file sink writes and fsyncs the new
   * payload dir and swaps nothing) while the source waits. The `changes` event
   * that follows decides as ever — an object is only ever applied from it — and
   * a preparation it does not use is discarded. Only for settled objects
   * (applied, not queued or in flight, not held), after the first sync, and not
   * for sealed kinds: no secret is opened ahead of its turn. Queued behind the
   * source's question (setImmediate), so it never delays the answer's request.
   */
  private speculate(changes: Change[]): void {
    if (!this.progress.synced || !this.sinks.canPrepare || changes.length > SPECULATE_MAX_CHANGES) return;
    setImmediate(() => {
      for (const [id, keys] of this.store.preview(changes)) {
        const previous = this.desired.get(id);
        if (!keys || !previous || isSealed(keys.kind) || !this.upToDate.has(id) || this.held.has(id) || this.queue.has(id)) continue;
        if (keys.global.size + keys.cluster.size > (this.opts.limits?.maxKeys ?? Infinity)) continue;
        const result = buildObject(keys, { ...this.buildContext, unopened: 'skip' }, previous);
        if (result.type !== 'object' || result.object.hash === previous.hash) continue;
        this.speculated.add(id);
        void this.sinks.prepare(result.object);
      }
    });
  }

  /** The objects a sink can vouch for (the resync's `applied`), walked lazily: no copy of 20,000 per pass. */
  private *upToDateObjects(): Iterable<DesiredObject> {
    for (const o of this.desired.values()) if (this.upToDate.has(o.id)) yield o;
  }

  private materialized(): number {
    return Math.max(this.desired.size, this.seenInSinks?.size ?? 0);
  }

  /** (7) confirmations: the held removals they cover go now. */
  private release(values: Buffer[]): void {
    for (const id of this.guard.confirm(values, this.opts.node)) this.queue.mark(id, this.progress.received, true);
  }

  /** Work starts only once the first snapshot's sink listing is in (the guard needs it). */
  private pump(): void {
    if (!this.starting || this.seenInSinks) this.queue.pump();
  }

  /** Objects whose removal the mass-delete guard holds, if any. */
  heldDeletes(): Hold | undefined {
    return this.guard.state();
  }

  /** A sink saw something change under an object: re-check it against desired. */
  markDrift = (id: ObjectId): void => {
    // Before the first snapshot the store is empty, so every object would look
    // absent and be removed: a restart while etcd is down must keep the last
    // good files. The first snapshot reconciles everything anyway.
    if (!this.sawSnapshot) return;
    this.queue.mark(id, this.progress.received, true);
    this.pump();
  };

  /**
   * Re-check every object in every sink, and prune (periodic safety net).
   * When every sink can say cheaply which objects may have drifted
   * (`Sink.suspects`), only those get a full check; `deep` asks the sinks for
   * their slower checks too, and only a deep pass prunes.
   */
  resync(deep = true): void {
    // Not during the first full sync: a timer firing in a long first pass would
    // re-queue every object and delay readiness by a whole pass. A request made
    // meanwhile (e.g. leadership gained mid-pass) runs once that sync is done.
    if (!this.progress.synced) {
      this.resyncPending = true;
      return;
    }
    this.passes.start(deep);
  }

  desiredObjects(): ReadonlyMap<ObjectId, DesiredObject> {
    return this.desired;
  }

  /** Objects a sink keeps failing on (with backoff), for status and metrics. */
  failing(): number {
    return this.retries.failing();
  }

  /** Why the sinks make this daemon not ready (a failure worth retrying older than `stallSeconds`), or undefined. */
  sinkStall(stallSeconds: number): string | undefined {
    const s = this.retries.stalled(stallSeconds * 1000);
    return s && `sink ${s.sink} cannot apply ${s.objects} object(s) for ${s.seconds} s (retrying): ${s.reason}`;
  }

  /** Resolves when nothing is dirty and nothing is in flight. */
  whenIdle(): Promise<void> {
    if (this.queue.idle() && this.pruneFrom === undefined && !this.pruneAfterChecks) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * A cold start of many objects takes a while: say how far along it is every
   * COLD_START_LOG_MS, until the first full sync is done.
   */
  private startColdStartLog(): void {
    const f = this.progress.firstSync;
    f.total = this.store.objects.size;
    f.startedAt = performance.now();
    this.coldStartTimer = setInterval(() => {
      if (this.progress.synced) return clearInterval(this.coldStartTimer);
      const done = Math.min(f.done, f.total);
      const seconds = Math.round((performance.now() - f.startedAt) / 1000);
      this.opts.logger.info({ done, total: f.total, seconds }, `first sync: ${count(done)} / ${count(f.total)} objects after ${seconds} s`);
    }, COLD_START_LOG_MS);
    this.coldStartTimer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.coldStartTimer);
    await this.passes.close();
    this.retries.close();
    await this.queue.close();
    await this.opts.closeOpener?.();
    zeroUnless(this.secrets.clear(), []);
  }

  /** (4) then (6), each time the workers run dry. */
  private async idle(): Promise<void> {
    if (this.pruneFrom !== undefined || (this.pruneAfterChecks && !this.queue.hasChecks())) {
      this.pruneAfterChecks = false;
      const listed = this.startListing;
      this.startListing = undefined;
      await this.sinks.prune((id) => this.desired.has(id) || this.held.has(id) || this.guard.isHeld(id), listed);
      this.pruneFrom = undefined;
      if (!this.progress.synced) {
        const seconds = Math.round((performance.now() - this.progress.firstSync.startedAt) / 100) / 10;
        const n = this.desired.size;
        this.opts.logger.info({ objects: n, seconds, revision: this.progress.received }, `first full sync: ${count(n)} object${n === 1 ? '' : 's'} in ${seconds} s`);
        clearInterval(this.coldStartTimer);
      }
      this.progress.synced = true;
      if (this.resyncPending) {
        this.resyncPending = false;
        return this.resync();
      }
    }
    if (this.queue.hasChanges()) return; // marked during the prune: the next idle step reports
    this.advance();
    this.emit({ type: 'idle', applied: this.progress.applied });
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** (6) */
  private advance(): void {
    const pending = Math.min(this.queue.oldestPending() ?? Infinity, this.pruneFrom ?? Infinity);
    if (this.progress.synced || this.pruneFrom === undefined) this.progress.markApplied(Math.min(pending, this.progress.received));
  }

  private async noteSinkContents(): Promise<void> {
    const seen = new Set<ObjectId>();
    const listed = new Map<Sink, ObjectId[]>();
    for (const sink of this.opts.sinks) {
      const ids = await sink.list().catch(() => undefined);
      if (ids && sink.stableListing) listed.set(sink, ids);
      for (const id of ids ?? []) seen.add(id);
    }
    this.seenInSinks = seen;
    this.startListing = listed;
  }

  /** (2)–(5) for one object; (9) a preparation made for it is taken by the sinks' apply or remove, else discarded. */
  private async reconcileObject(id: ObjectId, since: { force: boolean; dirtySince?: number }): Promise<void> {
    const speculated = this.speculated.delete(id);
    let touched = false;
    try {
      touched = await this.reconcileOne(id, since);
    } finally {
      if (speculated && !touched) this.sinks.discard(id);
    }
  }

  /** True when a sink was asked to apply or remove the object. */
  private async reconcileOne(id: ObjectId, since: { force: boolean; dirtySince?: number }): Promise<boolean> {
    const keys = this.store.objects.get(id);
    if (keys) this.guard.forget(id);
    const previous = this.desired.get(id);
    // A resync of an unchanged object costs a sink check, not a rebuild (the idle cost must not grow with the keyspace).
    if (since.force && previous && this.upToDate.has(id)) return this.sinks.apply(previous, since.dirtySince, this.progress.synced).then(() => true);
    this.upToDate.delete(id);
    let dropped: Buffer[] = [];
    let result: ReturnType<typeof buildObject>;
    if (!keys) {
      dropped = await this.secrets.refresh(id, []);
      result = { type: 'absent', problems: [] };
    } else {
      const tooMany = keys.global.size + keys.cluster.size > (this.opts.limits?.maxKeys ?? Infinity);
      if (isSealed(keys.kind) && !tooMany) dropped = await this.secrets.refresh(id, [...keys.global.values(), ...keys.cluster.values()]);
      const unopened = !previous && (this.seenInSinks?.has(id) ?? !this.progress.synced) ? 'hold' : 'skip';
      result = buildObject(keys, { ...this.buildContext, unopened, secret: (kv) => this.secrets.get(kv.path, id) }, previous);
    }
    this.problems.setFor(`object:${id}`, result.problems);

    let touched = false;
    if (result.type === 'hold') {
      this.held.add(id);
      if ((touched = since.force && previous !== undefined)) await this.sinks.apply(previous!, since.dirtySince, this.progress.synced);
    } else if (result.type === 'absent') {
      if (!keys && this.guard.isHeld(id)) return false; // (7) stays until released
      this.held.delete(id);
      if (this.desired.delete(id)) this.emit({ type: 'desired', id });
      touched = true;
      await this.sinks.remove(id);
    } else {
      this.held.delete(id);
      this.seenInSinks?.delete(id);
      this.desired.set(id, result.object);
      if (previous?.hash !== result.object.hash) this.emit({ type: 'desired', id });
      this.upToDate.add(id);
      if ((touched = since.force || !previous || previous.hash !== result.object.hash)) await this.sinks.apply(result.object, since.dirtySince, this.progress.synced);
    }
    // Plaintext that left the cache and that no desired object still uses.
    zeroUnless(dropped, this.desired.get(id)?.data.values() ?? []);
    return touched;
  }

  private emit(event: ReconcileEvent): void {
    for (const o of this.observers) o(event);
  }
}
