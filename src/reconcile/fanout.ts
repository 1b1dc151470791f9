/**
 * Hands one object to every sink and reports what each did: a write or removal
 * as an event, a failure to the retry book (retries.ts), which backs off and
 * re-queues. One sink failing never stops the others.
 */
import type { DesiredObject } from '../desired/types.js';
import type { ObjectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { Sink } from '../sink/types.js';
import type { ReconcileEvent, ReconcileStats } from './events.js';
import type { ProblemReporter } from './problems.js';
import type { SinkRetries } from './retries.js';

export interface SinkFanoutOptions {
  sinks: Sink[];
  logger: Logger;
  retries: SinkRetries;
  stats: ReconcileStats;
  /** Where a failing write stays open (status' lastError) until the object applies again. */
  problems: ProblemReporter;
  emit: (e: ReconcileEvent) => void;
}

export class SinkFanout {
  constructor(private readonly opts: SinkFanoutOptions) {}

  /**
   * Every sink at once: they share nothing, and one after the other the API
   * server's round trip waited for the file sink's fsyncs (put → ConfigMap
   * paid for put → file).
   */
  async apply(obj: DesiredObject, dirtySince: number | undefined, synced: boolean): Promise<void> {
    await Promise.all(
      this.opts.sinks.map(async (sink) => {
        try {
          if ((await sink.apply(obj, { bulk: !synced })) === 'written') {
            this.opts.stats.writes++;
            const fields = { sink: sink.name, object: obj.id, revision: obj.revision, keys: obj.data.size };
            // One line per write is what an operator wants on a running node; 10,000 of them during a cold start is noise.
            if (synced) this.opts.logger.info(fields, 'object written');
            else this.opts.logger.debug(fields, 'object written');
            this.opts.emit({ type: 'written', sink: sink.name, object: obj, dirtySince });
          }
          this.succeeded(sink, obj.id);
        } catch (err) {
          this.failed(sink, obj.id, err);
        }
      }),
    );
  }

  /** Sinks that can prepare an update ahead of it (Sink.prepare). */
  get canPrepare(): boolean {
    return this.opts.sinks.some((s) => s.prepare);
  }

  /** Sink.prepare on every sink that has it; a failure there is nobody's business (the apply decides). */
  async prepare(obj: DesiredObject): Promise<void> {
    await Promise.all(this.opts.sinks.map((s) => s.prepare?.(obj).catch(() => undefined)));
  }

  discard(id: ObjectId): void {
    for (const s of this.opts.sinks) s.discard?.(id);
  }

  async remove(id: ObjectId): Promise<void> {
    await Promise.all(
      this.opts.sinks.map(async (sink) => {
        try {
          await sink.remove(id);
          this.succeeded(sink, id);
          this.opts.emit({ type: 'removed', sink: sink.name, id });
        } catch (err) {
          this.failed(sink, id, err);
        }
      }),
    );
  }

  /**
   * Remove what each sink owns that `keep` does not claim. Only ever after a
   * complete snapshot was reconciled. `listed`: a sink's listing taken earlier
   * that still covers everything it may remove (the first sync's); the others list now.
   */
  async prune(keep: (id: ObjectId) => boolean, listed?: Map<Sink, ObjectId[]>): Promise<void> {
    for (const sink of this.opts.sinks) {
      let owned: ObjectId[];
      try {
        owned = listed?.get(sink) ?? (await sink.list());
        this.succeeded(sink, '*');
      } catch (err) {
        this.failed(sink, '*', err);
        continue;
      }
      for (const id of owned) {
        if (keep(id)) continue;
        try {
          await sink.remove(id);
          this.opts.logger.info({ sink: sink.name, object: id }, 'object pruned: no longer in etcd for this cluster');
          this.opts.emit({ type: 'removed', sink: sink.name, id });
        } catch (err) {
          this.failed(sink, id, err);
        }
      }
    }
  }

  private succeeded(sink: Sink, id: ObjectId): void {
    this.opts.retries.succeeded(sink.name, id);
    this.opts.problems.setFor(`sink:${sink.name}:${id}`, []);
  }

  private failed(sink: Sink, id: ObjectId, err: unknown): void {
    this.opts.stats.sinkErrors++;
    this.opts.problems.keep(`sink:${sink.name}:${id}`, [{ path: `${sink.name}:${id}`, reason: (err as Error).message }]);
    this.opts.retries.failed(sink.name, id, err as Error);
  }
}
