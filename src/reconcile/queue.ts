/**
 * The reconciler's work queue: dirty objects, each with the revision before the
 * change that dirtied it, worked on by at most `concurrency` workers and never by
 * two at once for one object.
 *
 *  (1) `mark` adds an id (keeping its older revision and its earliest arrival
 *      time when it is already queued; `force` is sticky until the id is taken);
 *  (2) `pump` starts workers while there is room, taking ids in queue order and
 *      passing over ids that are in flight (at most `concurrency` of them, so a
 *      pass is short): an id dirtied again while in flight waits its turn;
 *  (3) when no change is queued or in flight, `onIdle` runs once (checks may still
 *      be waiting; it runs once more when the last check is done); work marked
 *      meanwhile starts after it;
 *  (4) `check` queues a re-check of an object whose desired state is applied (the
 *      periodic resync) in a second lane: taken only when no change waits, at most
 *      one at a time, and never holding the applied revision back — a resync of
 *      20,000 objects must not delay a put behind it, nor make the node look behind.
 *  (5) a worker that finishes pumps the next at once, unless the work since the
 *      event loop's last turn has taken over TURN_MS: then the next pump waits for
 *      setImmediate. Work that never waits on I/O (a sink's synchronous metadata
 *      calls: a first sync on tmpfs, where nothing is fsynced, or a restart's
 *      up-to-date checks) once ran 20,000 objects in one turn — 5 s in which
 *      etcd's watch answers went unread and the source took a busy daemon for a
 *      silent etcd.
 * Queue order is arrival order and revisions only grow, so the oldest pending
 * revision is the first queued entry's or an in-flight one's.
 */
import type { ObjectId } from '../keyspace.js';

/** (5) Work done in one turn of the event loop before the queue lets it turn, ms. */
const TURN_MS = 20;

export interface Taken {
  force: boolean;
  /** performance.now() when the first change not yet applied arrived. */
  dirtySince?: number;
}

interface Entry extends Taken {
  before: number;
}

export interface WorkQueueOptions {
  /** Workers at most; a function is asked at each pump (the reconciler allows more during a first sync). */
  concurrency: number | (() => number);
  work: (id: ObjectId, taken: Taken) => Promise<void>;
  onError: (id: ObjectId, err: unknown) => void;
  onIdle: () => Promise<void>;
}

export class WorkQueue {
  private readonly queued = new Map<ObjectId, Entry>();
  private readonly checks = new Set<ObjectId>();
  /** id -> the revision it holds back (Infinity for a check: it holds none). */
  private readonly inFlight = new Map<ObjectId, number>();
  private checking = 0;
  private changing = 0;
  private idling?: Promise<void>;
  /** Something was marked or worked on since the last idle step. */
  private changed = false;
  private closed = false;
  private settled = Promise.resolve();
  /** (5) performance.now() when work started in this turn of the event loop; cleared by the next turn. */
  private turnStart?: number;
  private deferred = false;

  constructor(private readonly opts: WorkQueueOptions) {}

  /** (1) */
  mark(id: ObjectId, before: number, force: boolean, dirtySince?: number): void {
    this.changed = true;
    if (this.checks.delete(id)) force = true; // the change's work does the check too
    const e = this.queued.get(id);
    if (e) {
      e.force ||= force;
      e.dirtySince ??= dirtySince;
    } else {
      this.queued.set(id, { before, force, dirtySince });
    }
  }

  /** Queued or being worked on (a change or a check). */
  has(id: ObjectId): boolean {
    return this.queued.has(id) || this.inFlight.has(id) || this.checks.has(id);
  }

  /** (4) */
  check(id: ObjectId): void {
    this.changed = true;
    const e = this.queued.get(id);
    if (e) e.force = true;
    else this.checks.add(id);
  }

  /** (2) */
  pump(): void {
    if (this.closed || this.idling) return;
    const limit = typeof this.opts.concurrency === 'number' ? this.opts.concurrency : this.opts.concurrency();
    for (const [id, entry] of this.queued) {
      if (this.inFlight.size >= limit) return;
      if (this.inFlight.has(id)) continue;
      this.queued.delete(id);
      this.start(id, entry.before, entry);
    }
    // (4) Here every queued change has started or waits for its own id's worker.
    if (this.checking === 0 && this.inFlight.size < limit) {
      for (const id of this.checks) {
        if (this.inFlight.has(id)) continue;
        this.checks.delete(id);
        this.checking++;
        this.start(id, Infinity, { force: true });
        break;
      }
    }
    this.runIdle();
  }

  private start(id: ObjectId, before: number, taken: Taken): void {
    this.inFlight.set(id, before);
    if (before !== Infinity) this.changing++;
    const run = this.opts
      .work(id, taken)
      .catch((err: unknown) => this.opts.onError(id, err))
      .finally(() => {
        this.inFlight.delete(id);
        if (before !== Infinity) this.changing--;
        else if (--this.checking === 0 && this.checks.size === 0) this.changed = true; // a pass ended: one more idle step
        this.pumpAfterWork();
      });
    this.settled = Promise.all([this.settled, run]).then(() => undefined);
  }

  /** (5) */
  private pumpAfterWork(): void {
    const now = performance.now();
    if (this.turnStart === undefined) {
      this.turnStart = now;
      setImmediate(() => (this.turnStart = undefined));
    } else if (now - this.turnStart > TURN_MS) {
      if (!this.deferred) {
        this.deferred = true;
        setImmediate(() => {
          this.deferred = false;
          this.pump();
        });
      }
      return;
    }
    this.pump();
  }

  /** Run the idle step at the next chance even if nothing was marked (e.g. an empty snapshot to prune against). */
  requestIdle(): void {
    this.changed = true;
  }

  /** Changes queued or in flight (checks not counted). */
  hasChanges(): boolean {
    return this.queued.size > 0 || this.changing > 0;
  }

  /** Checks queued or in flight. */
  hasChecks(): boolean {
    return this.checks.size > 0 || this.checking > 0;
  }

  /** Objects queued or in flight, changes or checks. */
  hasWork(): boolean {
    return this.queued.size > 0 || this.checks.size > 0 || this.inFlight.size > 0;
  }

  idle(): boolean {
    return !this.hasWork() && !this.idling;
  }

  /** The lowest revision whose changes are not all applied yet, if any. */
  oldestPending(): number | undefined {
    let min = this.queued.values().next().value?.before ?? Infinity;
    for (const rev of this.inFlight.values()) min = Math.min(min, rev);
    return min === Infinity ? undefined : min;
  }

  /** Stops taking work; resolves when the workers and the idle step are done. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled;
    await this.idling;
  }

  /** (3) */
  private runIdle(): void {
    if (this.closed || this.idling || this.hasChanges() || !this.changed) return;
    this.changed = false;
    this.idling = this.opts
      .onIdle()
      .catch((err: unknown) => this.opts.onError('*', err))
      .finally(() => {
        this.idling = undefined;
        this.pump();
      });
  }
}
