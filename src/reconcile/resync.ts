/**
 * The periodic resync's passes (Reconciler.resync): which objects get a full
 * check. A full check of every object costs each sink a real comparison (the
 * file sink: a readdir, a readlink per key, an lstat per file — ~0.3 ms an
 * object, 8 % of a core at 20,000 objects every 60 s), so when every sink can
 * say cheaply which objects may have drifted (`Sink.suspects`, the file sink: two
 * lstats), only those — and the objects whose desired state is not built yet —
 * get one. A sink that cannot say makes every object a suspect.
 *
 * One pass at a time: a pass asked for while one is sweeping runs once it is done
 * (deep if either asked for deep), so a leadership change mid-pass is not lost.
 */
import type { DesiredObject } from '../desired/types.js';
import type { ObjectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { Sink } from '../sink/types.js';

export interface ResyncPassOptions {
  sinks: Sink[];
  logger: Logger;
  /** Objects applied with their desired state as it is now: the ones a sink can vouch for (walked once per sink). */
  applied: () => Iterable<DesiredObject>;
  /** Whether `id` is one of `applied` now (asked at the end of the sweep). */
  isApplied: (id: ObjectId) => boolean;
  /** Queue the full checks: `suspect(id)` says which objects need one. */
  check: (suspect: (id: ObjectId) => boolean, deep: boolean) => void;
}

export class ResyncPasses {
  private sweeping?: Promise<void>;
  private again?: boolean;
  private closed = false;

  constructor(private readonly opts: ResyncPassOptions) {}

  start(deep: boolean): void {
    if (this.closed) return;
    if (this.sweeping) {
      this.again = deep || (this.again ?? false);
      return;
    }
    this.sweeping = this.suspects(deep)
      .catch((err: Error) => {
        this.opts.logger.warn({ err: err.message }, 'resync: a sink could not tell which objects drifted; checking every object');
        return () => true;
      })
      .then((suspect) => {
        if (!this.closed) this.opts.check(suspect, deep);
      })
      .finally(() => {
        this.sweeping = undefined;
        const again = this.again;
        this.again = undefined;
        if (again !== undefined && !this.closed) this.start(again);
      });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.sweeping;
  }

  private async suspects(deep: boolean): Promise<(id: ObjectId) => boolean> {
    const { sinks } = this.opts;
    if (!sinks.every((s) => s.suspects)) return () => true;
    const suspects = new Set<ObjectId>();
    for (const sink of sinks) for (const id of await sink.suspects!(this.opts.applied(), deep)) suspects.add(id);
    // An object applied while the sweep ran was checked by that apply; one changed since is dirty anyway.
    return (id) => suspects.has(id) || !this.opts.isApplied(id);
  }
}
