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
 * The pacing is the process's (ProcessPacing): daemons hosted in one process share
 * it, and it ends with the last of them.
 *
 * The collector is reached the way jest's leak detector does it: `--expose-gc`
 * set at run time, `gc` taken from a fresh context, the flag cleared again (no
 * other context gets it). Where that does not work the pacer does nothing.
 */
export class HeapPacer {
  private isArmed = false;

  constructor(private readonly logger: Logger) {}

  get armed(): boolean {
    return this.isArmed;
  }

  arm(): void {
    if (this.isArmed || !pacing.arm()) return;
    this.isArmed = true;
  }

  /**
   * Collects now if the heap grew a step since the last collection (armed only);
   * `soon`: a quarter step (8 MiB) will do — before something that allocates a lot.
   */
  checkpoint(soon = false): void {
    if (this.isArmed) pacing.checkpoint(soon);
  }

  /**
   * One last collection (what the start left behind, unless nearly nothing), then V8
   * decides alone — once no other daemon of this process is starting. `collect: false`
   * when the daemon stops.
   */
  disarm(collect = true): void {
    if (!this.isArmed) return;
    this.isArmed = false;
    const done = pacing.release(collect);
    if (done) this.logger.debug({ collections: done.collections, ms: Math.round(done.ms), heapMiB: Math.round(done.floor / 2 ** 20) }, 'start-up heap pacing done');
  }
}

/**
 * The pacing itself, one per process: the heap is the process's, and a process may
 * host many daemons (bench/multi-daemon.ts: 25 each), whose pacers would otherwise
 * each collect the whole heap at every step. Armed while any of them is.
 */
class ProcessPacing {
  /** The collector; null where it cannot be reached; undefined until the first arm. */
  private gc?: (() => void) | null;
  private users = 0;
  private timer?: NodeJS.Timeout;
  /** Used heap right after the last collection. */
  private floor = 0;
  /** Growth that triggers the next collection: doubled while collections find the growth alive. */
  private step = STEP_BYTES;
  /** Collections made and the main thread's time in them, for the log line at the end. */
  private collections = 0;
  private ms = 0;

  /** False when there is no collector to pace. */
  arm(): boolean {
    if (this.gc === undefined) this.gc = exposeGc() ?? null;
    if (!this.gc) return false;
    if (this.users++ === 0) {
      this.floor = v8.getHeapStatistics().used_heap_size;
      this.step = STEP_BYTES;
      this.collections = 0;
      this.ms = 0;
      this.timer = setInterval(() => this.checkpoint(false), CHECK_MS);
      this.timer.unref();
    }
    return true;
  }

  checkpoint(soon: boolean): void {
    // (soon: not a collection regardless — daemons hosted in one process each ask at their first sync's end)
    if (this.timer && v8.getHeapStatistics().used_heap_size - this.floor >= (soon ? STEP_BYTES / 4 : this.step)) this.collect();
  }

  /** What the pacing did, when this was its last user (and `collect`). */
  release(collect: boolean): { collections: number; ms: number; floor: number } | undefined {
    if (--this.users > 0) return undefined;
    clearInterval(this.timer);
    this.timer = undefined;
    if (!collect) return undefined;
    // (Not again right after one: a restart's first-sync checkpoint was ~0.1 s before.)
    if (v8.getHeapStatistics().used_heap_size - this.floor >= STEP_BYTES / 4) this.collect();
    return { collections: this.collections, ms: this.ms, floor: this.floor };
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

const pacing = new ProcessPacing();

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
