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
 *  (3) when the last worker finishes and nothing is queued, `onIdle` runs once;
 *      work marked meanwhile starts after it.
 * Queue order is arrival order and revisions only grow, so the oldest pending
 * revision is the first queued entry's or an in-flight one's.
 */
import type { ObjectId } from '../keyspace.js';

export interface Taken {
  force: boolean;
  /** performance.now() when the first change not yet applied arrived. */
  dirtySince?: number;
}

interface Entry extends Taken {
  before: number;
}

export interface WorkQueueOptions {
  concurrency: number;
  work: (id: ObjectId, taken: Taken) => Promise<void>;
  onError: (id: ObjectId, err: unknown) => void;
  onIdle: () => Promise<void>;
}

export class WorkQueue {
  private readonly queued = new Map<ObjectId, Entry>();
  private readonly inFlight = new Map<ObjectId, number>();
  private idling?: Promise<void>;
  /** Something was marked or worked on since the last idle step. */
  private changed = false;
  private closed = false;
  private settled = Promise.resolve();

  constructor(private readonly opts: WorkQueueOptions) {}

  /** (1) */
  mark(id: ObjectId, before: number, force: boolean, dirtySince?: number): void {
    this.changed = true;
    const e = this.queued.get(id);
    if (e) {
      e.force ||= force;
      e.dirtySince ??= dirtySince;
    } else {
      this.queued.set(id, { before, force, dirtySince });
    }
  }

  /** (2) */
  pump(): void {
    if (this.closed || this.idling) return;
    for (const [id, entry] of this.queued) {
      if (this.inFlight.size >= this.opts.concurrency) return;
      if (this.inFlight.has(id)) continue;
      this.queued.delete(id);
      this.inFlight.set(id, entry.before);
      const run = this.opts
        .work(id, entry)
        .catch((err: unknown) => this.opts.onError(id, err))
        .finally(() => {
          this.inFlight.delete(id);
          this.pump();
          if (this.inFlight.size === 0) this.runIdle();
        });
      this.settled = Promise.all([this.settled, run]).then(() => undefined);
    }
    if (this.inFlight.size === 0) this.runIdle();
  }

  /** Run the idle step at the next chance even if nothing was marked (e.g. an empty snapshot to prune against). */
  requestIdle(): void {
    this.changed = true;
  }

  /** Objects queued or in flight. */
  hasWork(): boolean {
    return this.queued.size > 0 || this.inFlight.size > 0;
  }

  idle(): boolean {
    return !this.hasWork() && !this.idling;
  }

  /** The lowest revision whose changes are not all applied yet, if any. */
  oldestPending(): number | undefined {
    let min: number | undefined = this.queued.values().next().value?.before;
    for (const rev of this.inFlight.values()) min = min === undefined ? rev : Math.min(min, rev);
    return min;
  }

  /** Stops taking work; resolves when the workers and the idle step are done. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled;
    await this.idling;
  }

  /** (3) */
  private runIdle(): void {
    if (this.closed || this.idling || this.queued.size > 0 || !this.changed) return;
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
