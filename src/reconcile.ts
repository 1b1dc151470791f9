import { performance } from 'node:perf_hooks';
import { buildObject, type BuildContext, type Problem } from './desired/build.js';
import { KeyStore } from './desired/store.js';
import type { DesiredObject, ObjectId } from './desired/types.js';
import type { Logger } from './log.js';
import type { Sink } from './sink/types.js';
import type { Kv, SourceEvent } from './source/types.js';

/** Who wants to know what the loop did: metrics, hooks, status. Must not throw. */
export interface ReconcileObserver {
  /** A sink wrote the object; `dirtySince` is when the change that caused it arrived (performance.now()). */
  written?(sink: string, obj: DesiredObject, dirtySince: number | undefined): void;
  removed?(sink: string, id: ObjectId): void;
  problem?(kind: 'invalidInputs' | 'decryptFailures', p: Problem): void;
  sinkError?(sink: string, id: ObjectId, err: Error): void;
}

export interface ReconcilerOptions {
  /** Key prefix with trailing slash, e.g. "/confsync/". */
  prefix: string;
  cluster: string;
  labels: Record<string, string>;
  sinks: Sink[];
  logger: Logger;
  /** Opens a secret envelope bound to `logicalPath`; rejects with a generic error. */
  openSecret?: (logicalPath: string, envelope: Buffer) => Promise<Buffer>;
  /** Objects reconciled at once; one slow object never blocks the rest. */
  concurrency?: number;
  /** Delay before retrying an object a sink failed on. */
  retryMs?: number;
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
 *  (2) a single drain loop takes the whole dirty set at once — so a burst of puts
 *      to one object collapses into one projection — and rebuilds each object
 *      (pure core) after opening its secrets;
 *  (3) changed objects go to every sink; an object whose hash did not change is
 *      skipped unless forced (drift hint, resync, retry);
 *  (4) absent objects are removed; after a snapshot, sinks are listed and whatever
 *      they own that is neither desired nor held is pruned — only ever from a
 *      complete snapshot, so an etcd outage prunes nothing;
 *  (5) a held object (bad @meta, unopenable secret) keeps its last good state
 *      everywhere; a failing sink write is reported and retried, the rest go on.
 */
export class Reconciler {
  readonly store: KeyStore;
  readonly stats: ReconcileStats = { invalidInputs: 0, decryptFailures: 0, sinkErrors: 0, writes: 0 };
  /** Highest etcd revision whose changes every sink has been handed. */
  appliedRevision = 0;
  /** True once the first snapshot has been fully reconciled. */
  synced = false;

  private readonly desired = new Map<ObjectId, DesiredObject>();
  private readonly held = new Set<ObjectId>();
  private readonly dirty = new Set<ObjectId>();
  /** When each dirty object's oldest unapplied change arrived, for the latency histogram. */
  private readonly dirtySince = new Map<ObjectId, number>();
  private readonly forced = new Set<ObjectId>();
  private readonly opened = new Map<string, { rev: number; result: Buffer | { error: string } }>();
  private readonly reported = new Set<string>();
  private readonly retryTimers = new Map<ObjectId, NodeJS.Timeout>();
  private pruneAfterDrain = false;
  private resyncPending = false;
  private sawSnapshot = false;
  private draining?: Promise<void>;
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  private readonly buildContext: BuildContext;
  private readonly observers: ReconcileObserver[];

  constructor(private readonly opts: ReconcilerOptions) {
    this.store = new KeyStore(opts.prefix, opts.cluster);
    this.observers = opts.observers ?? [];
    this.buildContext = {
      cluster: opts.cluster,
      labels: opts.labels,
      secret: (path) => this.opened.get(path)?.result ?? { error: 'secret not opened' },
    };
  }

  /** (1) */
  handle = (event: SourceEvent): void => {
    if (event.type === 'snapshot') {
      const { dirty, invalid } = this.store.reset(event.kvs, event.revision);
      this.reportInvalid(invalid);
      for (const id of dirty) this.dirty.add(id);
      this.sawSnapshot = true;
      this.pruneAfterDrain = true;
    } else if (event.type === 'changes') {
      const { dirty, invalid } = this.store.apply(event.changes, event.revision);
      this.reportInvalid(invalid);
      const now = performance.now();
      for (const id of dirty) {
        this.dirty.add(id);
        if (!this.dirtySince.has(id)) this.dirtySince.set(id, now);
      }
    } else if (event.type === 'progress') {
      this.store.revision = Math.max(this.store.revision, event.revision);
      // Nothing of ours changed up to here: once idle, we have applied it.
      if (!this.draining && this.dirty.size === 0 && this.synced) this.appliedRevision = Math.max(this.appliedRevision, this.store.revision);
      return;
    } else {
      return;
    }
    this.kick();
  };

  /** A sink saw something change under an object: re-check it against desired. */
  markDrift = (id: ObjectId): void => {
    // Before the first snapshot the store is empty, so every object would look
    // absent and be removed: a restart while etcd is down must keep the last
    // good files. The first snapshot reconciles everything anyway.
    if (!this.sawSnapshot) return;
    this.forced.add(id);
    this.dirty.add(id);
    this.kick();
  };

  /** Re-check every object in every sink, and prune (periodic safety net). */
  resync(): void {
    // Not during the first full sync: a timer firing in a long first pass would
    // re-queue every object and delay readiness by a whole pass. A request made
    // meanwhile (e.g. leadership gained mid-pass) runs once that sync is done.
    if (!this.synced) {
      this.resyncPending = true;
      return;
    }
    for (const id of this.store.objects.keys()) this.forced.add(id), this.dirty.add(id);
    for (const id of this.desired.keys()) this.forced.add(id), this.dirty.add(id);
    this.pruneAfterDrain = true;
    this.kick();
  }

  desiredObjects(): ReadonlyMap<ObjectId, DesiredObject> {
    return this.desired;
  }

  /** Resolves when nothing is dirty and no drain is running. */
  whenIdle(): Promise<void> {
    if (!this.draining && this.dirty.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.retryTimers.values()) clearTimeout(t);
    await this.draining;
  }

  private kick(): void {
    if (this.draining || this.closed) return;
    this.draining = this.drain()
      .catch((err) => this.opts.logger.error({ err: (err as Error).message }, 'reconcile loop failed; will retry on the next change'))
      .finally(() => {
        this.draining = undefined;
        if (this.dirty.size > 0 && !this.closed) return this.kick();
        for (const w of this.idleWaiters.splice(0)) w();
      });
  }

  /** (2)–(4) */
  private async drain(): Promise<void> {
    while (this.dirty.size > 0 || this.pruneAfterDrain) {
      const target = this.store.revision;
      const batch = [...this.dirty];
      this.dirty.clear();
      await forEachLimit(batch, this.opts.concurrency ?? 8, (id) => this.reconcileObject(id));
      if (this.pruneAfterDrain && this.dirty.size === 0) {
        this.pruneAfterDrain = false;
        await this.prune();
        this.synced = true;
        if (this.resyncPending) {
          this.resyncPending = false;
          this.resync();
        }
      }
      this.appliedRevision = Math.max(this.appliedRevision, target);
    }
    // Changes that touched no object (an invalid key, another kind of key) are
    // applied by doing nothing: once idle, the whole store revision is applied.
    if (this.synced) this.appliedRevision = Math.max(this.appliedRevision, this.store.revision);
  }

  private async reconcileObject(id: ObjectId): Promise<void> {
    const force = this.forced.delete(id);
    const since = this.dirtySince.get(id);
    this.dirtySince.delete(id);
    const keys = this.store.objects.get(id);
    const previous = this.desired.get(id);
    let result: ReturnType<typeof buildObject>;
    if (!keys) {
      result = { type: 'absent', problems: [] };
    } else {
      if (keys.kind === 'secrets') await this.openSecrets(keys.global, 'global', id).then(() => this.openSecrets(keys.cluster, `clusters/${this.opts.cluster}`, id));
      result = buildObject(keys, this.buildContext, previous);
    }
    for (const p of result.problems) this.report(p, p.reason.startsWith('@meta') ? 'invalidInputs' : 'decryptFailures');

    if (result.type === 'hold') {
      this.held.add(id);
      if (force && previous) await this.applyEverywhere(previous, since);
      return;
    }
    this.held.delete(id);
    if (result.type === 'absent') {
      this.desired.delete(id);
      await this.removeEverywhere(id);
      return;
    }
    this.desired.set(id, result.object);
    if (force || !previous || previous.hash !== result.object.hash) await this.applyEverywhere(result.object, since);
  }

  /** Open each secret once per mod revision; the result (or its generic error) is cached. */
  private async openSecrets(layer: Map<string, Kv>, scope: string, id: ObjectId): Promise<void> {
    const [, ns, name] = id.split('/');
    for (const [key, kv] of layer) {
      const path = `${scope}/secrets/${ns}/${name}/${key}`;
      if (this.opened.get(path)?.rev === kv.modRevision) continue;
      let result: Buffer | { error: string };
      if (!this.opts.openSecret) result = { error: 'no identity configured: cannot open secrets' };
      else {
        try {
          result = await this.opts.openSecret(path, kv.value);
        } catch (err) {
          result = { error: (err as Error).message };
        }
      }
      this.opened.set(path, { rev: kv.modRevision, result });
    }
  }

  private async applyEverywhere(obj: DesiredObject, since?: number): Promise<void> {
    for (const sink of this.opts.sinks) {
      try {
        if ((await sink.apply(obj)) === 'written') {
          this.stats.writes++;
          this.opts.logger.info({ sink: sink.name, object: obj.id, revision: obj.revision, keys: obj.data.size }, 'object written');
          for (const o of this.observers) o.written?.(sink.name, obj, since);
        }
      } catch (err) {
        this.sinkFailed(sink, obj.id, err);
      }
    }
  }

  private async removeEverywhere(id: ObjectId): Promise<void> {
    for (const sink of this.opts.sinks) {
      try {
        await sink.remove(id);
        for (const o of this.observers) o.removed?.(sink.name, id);
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
          for (const o of this.observers) o.removed?.(sink.name, id);
        } catch (err) {
          this.sinkFailed(sink, id, err);
        }
      }
    }
  }

  /** (5) */
  private sinkFailed(sink: Sink, id: ObjectId, err: unknown): void {
    this.stats.sinkErrors++;
    for (const o of this.observers) o.sinkError?.(sink.name, id, err as Error);
    this.stats.lastError = { path: `${sink.name}:${id}`, reason: (err as Error).message };
    const retryMs = this.opts.retryMs ?? 1000;
    this.opts.logger.warn({ sink: sink.name, object: id, err: (err as Error).message, retryInMs: retryMs }, 'sink could not apply object; keeping its last state and retrying');
    if (id === '*' || this.retryTimers.has(id) || this.closed) return;
    const timer = setTimeout(() => {
      this.retryTimers.delete(id);
      this.markDrift(id);
    }, retryMs);
    timer.unref();
    this.retryTimers.set(id, timer);
  }

  private reportInvalid(problems: Problem[]): void {
    for (const p of problems) this.report(p, 'invalidInputs');
  }

  private report(p: Problem, counter: 'invalidInputs' | 'decryptFailures'): void {
    // Count and log each distinct (path, reason) once: a resync must not re-report it.
    const tag = `${p.path}\0${p.reason}`;
    this.stats.lastError = p;
    if (this.reported.has(tag)) return;
    this.reported.add(tag);
    this.stats[counter]++;
    for (const o of this.observers) o.problem?.(counter, p);
    this.opts.logger.warn({ path: p.path, reason: p.reason }, counter === 'invalidInputs' ? 'invalid input skipped; last good state kept' : 'secret not opened; last good value kept');
  }
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
