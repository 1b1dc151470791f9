/**
 * Retries of objects a sink failed on, with exponential backoff to a cap, and
 * logs that follow state changes rather than time: one warning when an object
 * starts failing (or fails for a new reason), one info line when it recovers,
 * debug in between. A bad input (`InvalidInput`) is reported and not retried:
 * the same input fails the same way until someone changes it, and that change
 * dirties the object again.
 */
import { isRetryable } from '../errors.js';
import type { ObjectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { SinkKind } from '../sink/types.js';
import type { ReconcileEvent } from './events.js';

interface Failure {
  count: number;
  reason: string;
  /** When this object started failing (Date.now()), and whether the last error is worth retrying. */
  since: number;
  retryable: boolean;
  timer?: NodeJS.Timeout;
}

export interface SinkRetriesOptions {
  baseMs: number;
  maxMs: number;
  logger: Logger;
  emit: (e: ReconcileEvent) => void;
  /** Re-queue the object (the reconciler's drift path). */
  retry: (id: ObjectId) => void;
}

export class SinkRetries {
  private readonly failures = new Map<string, Failure>();
  private closed = false;

  constructor(private readonly opts: SinkRetriesOptions) {}

  failed(sink: SinkKind, id: ObjectId, error: Error): void {
    const tag = `${sink}\0${id}`;
    const f = this.failures.get(tag) ?? { count: 0, reason: '', since: Date.now(), retryable: true };
    f.count++;
    const retryable = isRetryable(error);
    f.retryable = retryable;
    const retryInMs = retryable && id !== '*' ? this.delay(f.count) : undefined;
    const fields = { sink, object: id, err: error.message, failures: f.count, retryInMs };
    if (f.reason !== error.message) {
      this.opts.logger.warn(fields, retryable ? 'sink could not apply object; keeping its last state, retrying with backoff' : 'sink refused object as invalid; keeping its last state until it changes');
    } else {
      this.opts.logger.debug(fields, 'sink still failing on object');
    }
    f.reason = error.message;
    this.failures.set(tag, f);
    this.opts.emit({ type: 'sinkError', sink, id, error, retryable, retryInMs });
    if (retryInMs === undefined || f.timer || this.closed) return;
    f.timer = setTimeout(() => {
      f.timer = undefined;
      this.opts.retry(id);
    }, retryInMs);
    f.timer.unref();
  }

  succeeded(sink: SinkKind, id: ObjectId): void {
    const tag = `${sink}\0${id}`;
    const f = this.failures.get(tag);
    if (!f) return;
    clearTimeout(f.timer);
    this.failures.delete(tag);
    this.opts.logger.info({ sink, object: id, failures: f.count }, 'sink applied object again after failing');
    this.opts.emit({ type: 'sinkRecovered', sink, id });
  }

  /** Objects currently failing in some sink. */
  failing(): number {
    return this.failures.size;
  }

  /**
   * The oldest failure that is worth retrying and has lasted over `ms` (a sink
   * that cannot apply: API unreachable, disk full), with how many objects are in
   * that state; undefined when none. Refused input is not counted: the daemon is
   * working, the input is wrong.
   */
  stalled(ms: number): { sink: string; objects: number; seconds: number; reason: string } | undefined {
    const now = Date.now();
    let oldest: { sink: string; f: Failure } | undefined;
    let objects = 0;
    for (const [tag, f] of this.failures) {
      // '*' (a sink's listing for the prune) is tried again at the next deep pass only: not a measure of now.
      if (!f.retryable || now - f.since <= ms || tag.endsWith('\0*')) continue;
      objects++;
      if (!oldest || f.since < oldest.f.since) oldest = { sink: tag.slice(0, tag.indexOf('\0')), f };
    }
    return oldest && { sink: oldest.sink, objects, seconds: Math.round((now - oldest.f.since) / 1000), reason: oldest.f.reason };
  }

  close(): void {
    this.closed = true;
    for (const f of this.failures.values()) clearTimeout(f.timer);
  }

  /** baseMs, 2×, 4×, … up to maxMs, with ±25 % jitter so many objects do not retry in step. */
  private delay(count: number): number {
    const ms = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(count - 1, 20));
    return Math.round(ms * (0.75 + Math.random() / 2));
  }
}
