import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Logger } from './log.js';

/** Heap growth (bytes of used heap since the last collection) that triggers a collection while armed. */
const STEP_BYTES = 32 * 2 ** 20;
/** The step after collections that found the growth alive (the store filling up), at most. */
const MAX_STEP_BYTES = 128 * 2 ** 20;
/** How often an armed pacer looks at the heap, ms. */
const CHECK_MS = 250;

/**
 * Keeps a start's garbage from becoming its peak RSS.
 *
 * A cold start or a restart of 10,000 objects (110,000 keys) allocates several
 * times its live heap in a few seconds — list pages, the snapshot's text and its
 * parse, each object's build and write — and nearly all of it is promoted before
 * it dies (an object dir's write outlives a scavenge). V8 sizes the old
 * generation from the collection before, growing it by up to 4× while the
 * program allocates fast, and collects when that limit is reached: at 20,000
 * objects the used heap reached 230–240 MiB over a live heap of ~120, and the
 * RSS 385–440 MiB (docs/BENCHMARKS.md, seventh session).
 *
 * While armed (from the start until the first sync and its snapshot write are
 * done, and again for a re-list) the pacer collects whenever the used heap grew
 * a step (STEP_BYTES) past what the last collection left, and at `checkpoint()`
 * calls the start makes right after dropping something large (the loaded
 * snapshot's text). A collection that finds most of the growth alive (the key
 * store filling up) doubles the step: a restart's sync grows the live heap by
 * ~50 MiB and would otherwise pay collections that free nothing. A full
 * collection of a ~120 MiB heap is 50–100 ms of the main thread. Disarmed, V8
 * alone decides.
 *
 * The collector is reached the way jest's leak detector does it: `--expose-gc`
 * set at run time, `gc` taken from a fresh context, the flag cleared again (no
 * other context gets it). Where that does not work the pacer does nothing.
 */
export class HeapPacer {
  private readonly gc = exposeGc();
  private timer?: NodeJS.Timeout;
  /** Used heap right after the last collection. */
  private floor = 0;
  /** Growth that triggers the next collection: doubled while collections find the growth alive. */
  private step = STEP_BYTES;
  /** Collections made and the main thread's time in them, for the log line at disarm. */
  private collections = 0;
  private ms = 0;

  constructor(private readonly logger: Logger) {}

  get armed(): boolean {
    return this.timer !== undefined;
  }

  arm(): void {
    if (!this.gc || this.timer) return;
    this.floor = v8.getHeapStatistics().used_heap_size;
    this.step = STEP_BYTES;
    this.timer = setInterval(() => this.checkpoint(), CHECK_MS);
    this.timer.unref();
  }

  /** Collects now if the heap grew a step since the last collection, or always with `force` (armed only). */
  checkpoint(force = false): void {
    if (this.timer && (force || v8.getHeapStatistics().used_heap_size - this.floor >= this.step)) this.collect();
  }

  /** One last collection (what the start left behind, unless nearly nothing), then V8 decides alone. `collect: false` when the daemon stops. */
  disarm(collect = true): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    // (Not again right after one: a restart's first-sync checkpoint was ~0.1 s before.)
    if (collect && v8.getHeapStatistics().used_heap_size - this.floor >= STEP_BYTES / 4) this.collect();
    if (!collect) return;
    this.logger.debug({ collections: this.collections, ms: Math.round(this.ms), heapMiB: Math.round(this.floor / 2 ** 20) }, 'start-up heap pacing done');
    this.collections = 0;
    this.ms = 0;
  }

  private collect(): void {
    const started = performance.now();
    const before = v8.getHeapStatistics().used_heap_size;
    this.gc!();
    this.ms += performance.now() - started;
    this.collections++;
    this.floor = v8.getHeapStatistics().used_heap_size;
    // Most of the growth was alive (a list or a snapshot filling the store): collecting
    // again after another step would find the same. Garbage found: back to a step.
    this.step = before - this.floor < this.step / 2 ? Math.min(this.step * 2, MAX_STEP_BYTES) : STEP_BYTES;
  }
}

function exposeGc(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
}
