import { performance } from 'node:perf_hooks';
import { buildObject, type BuildContext, type BuildLimits, type Problem } from '../desired/build.js';
import { KeyStore } from '../desired/store.js';
import type { DesiredObject, ObjectId } from '../desired/types.js';
import { isSealed } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { Sink } from '../sink/types.js';
import type { SourceEvent } from '../source/types.js';
import type { ProblemCounter, ReconcileEvent, ReconcileObserver } from './events.js';
import { Progress } from './progress.js';
import { SinkRetries } from './retries.js';
import { SecretCache, zeroUnless, type OpenSecret } from './secrets.js';
import { WorkQueue } from './queue.js';

export interface ReconcilerOptions {
  /** Key prefix with trailing slash, e.g. "/confsync/". */
  prefix: string;
  cluster: string;
  labels: Record<string, string>;
  sinks: Sink[];
  logger: Logger;
  openSecret?: OpenSecret;
  /** Objects reconciled at once; one slow object never blocks the rest. */
  concurrency?: number;
  /** First retry delay after a sink failed on an object; doubles up to `retryMaxMs`. */
  retryMs?: number;
  retryMaxMs?: number;
  limits?: BuildLimits;
  observers?: ReconcileObserver[];
}

export interface ReconcileStats {
  invalidInputs: number;
  decryptFailures: number;
  sinkErrors: number;
  writes: number;
  lastError?: Problem;
}

/**
 * The one loop: desired vs actual → minimal changes. The daemon, `plan` and the
 * tests all go through it.
 *
 *  (1) a source event updates the KeyStore and marks the objects it touched dirty;
 *      a snapshot marks every object dirty and asks for a prune;
 *  (2) workers take dirty objects one at a time (at most `concurrency` at once,
 *      never two for one object), open their secrets and rebuild them (pure core):
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
 *      still dirty or in flight: it never runs ahead of what the sinks have.
 */
export class Reconciler {
  readonly store: KeyStore;
  readonly progress = new Progress();
  readonly stats: ReconcileStats = { invalidInputs: 0, decryptFailures: 0, sinkErrors: 0, writes: 0 };

  private readonly desired = new Map<ObjectId, DesiredObject>();
  private readonly held = new Set<ObjectId>();
  /** Objects a sink held before our first snapshot: their last good secrets may be only there. */
  private seenInSinks?: Set<ObjectId>;
  private readonly queue: WorkQueue;
  private readonly secrets: SecretCache;
  private readonly retries: SinkRetries;
  private readonly reported = new Set<string>();
  private readonly buildContext: BuildContext;
  private readonly observers: ReconcileObserver[];
  private pruneFrom?: number;
  private resyncPending = false;
  private sawSnapshot = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: ReconcilerOptions) {
    this.store = new KeyStore(opts.prefix, opts.cluster);
    this.observers = opts.observers ?? [];
    this.secrets = new SecretCache(opts.openSecret);
    this.retries = new SinkRetries({ baseMs: opts.retryMs ?? 1000, maxMs: opts.retryMaxMs ?? 300_000, logger: opts.logger, emit: (e) => this.emit(e), retry: (id) => this.markDrift(id) });
    this.buildContext = { cluster: opts.cluster, labels: opts.labels, secret: () => ({ error: 'secret not opened' }), limits: opts.limits };
    this.queue = new WorkQueue({
      concurrency: opts.concurrency ?? 8,
      work: (id, since) => this.reconcileObject(id, since),
      onError: (id, err) => opts.logger.error({ object: id, err: (err as Error).message }, 'reconcile of one object failed; it is retried on its next change or resync'),
      onIdle: () => this.idle(),
    });
  }

  /** (1) */
  handle = (event: SourceEvent): void => {
    const before = this.progress.received;
    this.progress.noteEvent(event);
    if (event.type === 'snapshot') {
      const { dirty, invalid } = this.store.reset(event.kvs);
      this.reportInvalid(invalid);
      if (!this.sawSnapshot) void this.noteSinkContents();
      this.sawSnapshot = true;
      this.pruneFrom = Math.min(this.pruneFrom ?? before, before);
      this.queue.requestIdle();
      for (const id of dirty) this.queue.mark(id, before, false);
    } else if (event.type === 'changes') {
      const { dirty, invalid } = this.store.apply(event.changes);
      this.reportInvalid(invalid);
      const now = performance.now();
      for (const id of dirty) this.queue.mark(id, before, false, now);
    }
    this.advance();
    this.queue.pump();
  };

  /** A sink saw something change under an object: re-check it against desired. */
  markDrift = (id: ObjectId): void => {
    // Before the first snapshot the store is empty, so every object would look
    // absent and be removed: a restart while etcd is down must keep the last
    // good files. The first snapshot reconciles everything anyway.
    if (!this.sawSnapshot) return;
    this.queue.mark(id, this.progress.received, true);
    this.queue.pump();
  };

  /** Re-check every object in every sink, and prune (periodic safety net). */
  resync(): void {
    // Not during the first full sync: a timer firing in a long first pass would
    // re-queue every object and delay readiness by a whole pass. A request made
    // meanwhile (e.g. leadership gained mid-pass) runs once that sync is done.
    if (!this.progress.synced) {
      this.resyncPending = true;
      return;
    }
    const rev = this.progress.received;
    for (const id of new Set([...this.store.objects.keys(), ...this.desired.keys()])) this.queue.mark(id, rev, true);
    this.pruneFrom ??= rev;
    this.queue.requestIdle();
    this.queue.pump();
  }

  desiredObjects(): ReadonlyMap<ObjectId, DesiredObject> {
    return this.desired;
  }

  /** Objects a sink keeps failing on (with backoff), for status and metrics. */
  failing(): number {
    return this.retries.failing();
  }

  /** Resolves when nothing is dirty and nothing is in flight. */
  whenIdle(): Promise<void> {
    if (this.queue.idle() && this.pruneFrom === undefined) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    this.retries.close();
    await this.queue.close();
    zeroUnless(this.secrets.clear(), []);
  }

  /** (4) then (6), each time the workers run dry. */
  private async idle(): Promise<void> {
    if (this.pruneFrom !== undefined) {
      await this.prune();
      this.pruneFrom = undefined;
      if (!this.progress.synced) this.opts.logger.info({ objects: this.desired.size, revision: this.progress.received }, 'first full sync done');
      this.progress.synced = true;
      if (this.resyncPending) {
        this.resyncPending = false;
        return this.resync();
      }
    }
    if (this.queue.hasWork()) return; // marked during the prune: the next idle step reports
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
    for (const sink of this.opts.sinks) for (const id of await sink.list().catch(() => [])) seen.add(id);
    this.seenInSinks = seen;
  }

  /** (2)–(5) for one object. */
  private async reconcileObject(id: ObjectId, since: { force: boolean; dirtySince?: number }): Promise<void> {
    const keys = this.store.objects.get(id);
    const previous = this.desired.get(id);
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
    for (const p of result.problems) this.report(p, p.unopened ? 'decryptFailures' : 'invalidInputs');

    if (result.type === 'hold') {
      this.held.add(id);
      if (since.force && previous) await this.applyEverywhere(previous, since.dirtySince);
    } else if (result.type === 'absent') {
      this.held.delete(id);
      this.desired.delete(id);
      await this.removeEverywhere(id);
    } else {
      this.held.delete(id);
      this.seenInSinks?.delete(id);
      this.desired.set(id, result.object);
      if (since.force || !previous || previous.hash !== result.object.hash) await this.applyEverywhere(result.object, since.dirtySince);
    }
    // Plaintext that left the cache and that no desired object still uses.
    zeroUnless(dropped, this.desired.get(id)?.data.values() ?? []);
  }

  private async applyEverywhere(obj: DesiredObject, dirtySince?: number): Promise<void> {
    for (const sink of this.opts.sinks) {
      try {
        if ((await sink.apply(obj)) === 'written') {
          this.stats.writes++;
          const fields = { sink: sink.name, object: obj.id, revision: obj.revision, keys: obj.data.size };
          // One line per write is what an operator wants on a running node; 10,000 of them during a cold start is noise.
          if (this.progress.synced) this.opts.logger.info(fields, 'object written');
          else this.opts.logger.debug(fields, 'object written');
          this.emit({ type: 'written', sink: sink.name, object: obj, dirtySince });
        }
        this.retries.succeeded(sink.name, obj.id);
      } catch (err) {
        this.sinkFailed(sink, obj.id, err);
      }
    }
  }

  private async removeEverywhere(id: ObjectId): Promise<void> {
    for (const sink of this.opts.sinks) {
      try {
        await sink.remove(id);
        this.retries.succeeded(sink.name, id);
        this.emit({ type: 'removed', sink: sink.name, id });
      } catch (err) {
        this.sinkFailed(sink, id, err);
      }
    }
  }

  /** (4) Only ever after a complete snapshot has been reconciled. */
  private async prune(): Promise<void> {
    for (const sink of this.opts.sinks) {
      let owned: ObjectId[];
      try {
        owned = await sink.list();
      } catch (err) {
        this.sinkFailed(sink, '*', err);
        continue;
      }
      for (const id of owned) {
        if (this.desired.has(id) || this.held.has(id)) continue;
        try {
          await sink.remove(id);
          this.opts.logger.info({ sink: sink.name, object: id }, 'object pruned: no longer in etcd for this cluster');
          this.emit({ type: 'removed', sink: sink.name, id });
        } catch (err) {
          this.sinkFailed(sink, id, err);
        }
      }
    }
  }

  /** (5) */
  private sinkFailed(sink: Sink, id: ObjectId, err: unknown): void {
    this.stats.sinkErrors++;
    this.stats.lastError = { path: `${sink.name}:${id}`, reason: (err as Error).message };
    this.retries.failed(sink.name, id, err as Error);
  }

  private reportInvalid(problems: Problem[]): void {
    for (const p of problems) this.report(p, 'invalidInputs');
  }

  private report(p: Problem, counter: ProblemCounter): void {
    // Count and log each distinct (path, reason) once: a resync must not re-report it.
    const tag = `${p.path}\0${p.reason}`;
    this.stats.lastError = p;
    if (this.reported.has(tag)) return;
    this.reported.add(tag);
    this.stats[counter]++;
    this.emit({ type: 'problem', counter, problem: p });
    this.opts.logger.warn({ path: p.path, reason: p.reason }, counter === 'invalidInputs' ? 'invalid input skipped; last good state kept' : 'secret not opened; last good value kept');
  }

  private emit(event: ReconcileEvent): void {
    for (const o of this.observers) o(event);
  }
}
