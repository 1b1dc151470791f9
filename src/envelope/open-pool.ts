/**
 * Opening many envelopes at once off the main thread. A restart or a first sync
 * opens every secret of the keyspace (10,000 took ~1 s of libsodium on the main
 * thread, about a third of a restart); a put of one secret opens one. So:
 *
 *  (1) open() queues the request; the queue is served at the next setImmediate,
 *      so the opens asked in one turn of the event loop are seen together;
 *  (2) fewer than MIN_BATCH waiting: they open inline, on this thread, as before
 *      (one changed secret pays no message round trip);
 *  (3) more: both threads draw from the queue. The worker is sent SLICE at a
 *      time, at most SLICES_OUT slices outstanding, the next when one is answered; this
 *      thread opens INLINE_SLICE per turn of its event loop, between its other
 *      work. A first sync reaches its secrets after its config maps, when this
 *      thread has little else to do: a worker alone there would leave it idle.
 *      The plaintexts come back transferred (moved, not copied: no second copy
 *      stays in the worker's heap);
 *  (4) the worker starts on first need, with a copy of the keyring's private
 *      keys, and ends after IDLE_MS without work or at close() (with slices
 *      under way then: once they are answered), zeroing its keys first; it
 *      keeps the process alive only while opens are under way;
 *  (5) a worker that cannot start, errors or exits while opens are under way:
 *      one warning, its unanswered requests and every later one open inline.
 *
 * Answers are what openVersioned gives inline: the plaintext and the sealed
 * version, or an EnvelopeError with the same generic reason (nothing more
 * crosses the thread boundary).
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import { openVersioned } from './envelope.js';
import { EnvelopeError, type EnvelopeFailure } from './format.js';
import type { Keyring } from './identity.js';

/** (2) Below this many opens in one turn, inline is cheaper than a message round trip (~0.1 ms). */
export const MIN_BATCH = 8;
/** (3) Opens per message to the worker (~3 ms of opens), and how many such messages may be outstanding. */
const SLICE = 32;
const SLICES_OUT = 3;
/** (3) Opens per turn of this thread's event loop while the worker helps (~0.5 ms): this thread has the objects' other work to do. */
const INLINE_SLICE = 4;
/** (4) */
const IDLE_MS = 2_000;
/**
 * (4) The worker keeps nothing between slices (the plaintexts leave transferred): V8's
 * default young generation (16 MiB semi-spaces, filled by a start's 10,000 opens) was
 * RSS for nothing. At 2 MiB a start of 20,000 objects peaked ~15 MiB lower (cold 288 →
 * 273 MiB, restart 257 → 250 MiB, same hour) at no measurable cost in time.
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 2 };

export type Opened = { plaintext: Buffer; version: number };

/** One request as it crosses to the worker, and its answer. */
export type WorkerRequest = { id: number; items: [path: string, envelope: Uint8Array][] };
export type WorkerAnswer = { id: number; answers: ({ plaintext: Uint8Array; version: number } | { reason: EnvelopeFailure })[] };

interface Pending {
  path: string;
  envelope: Uint8Array;
  resolve: (o: Opened) => void;
  reject: (e: Error) => void;
}

export interface OpenPoolOptions {
  logger: Logger;
  /** The worker's module (tests point it elsewhere to make it fail). */
  workerUrl?: URL;
}

export class OpenPool {
  /** Opens done inline and in the worker, for tests and the bench. */
  readonly counts = { inline: 0, worker: 0 };
  private queued: Pending[] = [];
  private scheduled = false;
  private worker?: Worker;
  private broken = false;
  private closed = false;
  private nextId = 0;
  private readonly inFlight = new Map<number, Pending[]>();
  private idleTimer?: NodeJS.Timeout;

  constructor(
    private readonly keyring: Keyring,
    private readonly opts: OpenPoolOptions,
  ) {}

  /** (1) The plaintext of `envelope` stored at logical `path`, and its sealed version. */
  open = (path: string, envelope: Uint8Array): Promise<Opened> =>
    new Promise((resolve, reject) => {
      this.queued.push({ path, envelope, resolve, reject });
      this.schedule();
    });

  /** (4) Ends the worker, its keys zeroed first; later opens run inline. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stopWorker();
  }

  private schedule(): void {
    if (this.scheduled || this.queued.length === 0) return;
    this.scheduled = true;
    setImmediate(() => this.serve());
  }

  private serve(): void {
    this.scheduled = false;
    if (this.queued.length < MIN_BATCH && this.inFlight.size === 0) return this.inline(this.queued.splice(0)); // (2)
    if (!this.broken && !this.closed) this.feedWorker();
    this.inline(this.queued.splice(0, INLINE_SLICE));
    this.schedule();
  }

  /** (3) Tops the worker up to SLICES_OUT slices. */
  private feedWorker(): void {
    const worker = this.ensureWorker();
    if (!worker) return;
    while (this.inFlight.size < SLICES_OUT && this.queued.length > 0) {
      clearTimeout(this.idleTimer);
      worker.ref(); // answers are awaited: the process must not exit under them
      const slice = this.queued.splice(0, SLICE);
      const id = this.nextId++;
      this.inFlight.set(id, slice);
      const request: WorkerRequest = { id, items: slice.map((p) => [p.path, p.envelope]) };
      worker.postMessage(request);
    }
  }

  /** (2), (3) this thread's share, and (5)'s fallback; openVersioned is synchronous work behind a promise. */
  private inline(batch: Pending[]): void {
    for (const p of batch) {
      this.counts.inline++;
      openVersioned(p.envelope, p.path, this.keyring).then(p.resolve, p.reject);
    }
  }

  private ensureWorker(): Worker | undefined {
    if (this.worker) return this.worker;
    const identities = this.keyring.copies();
    try {
      const worker = new Worker(this.opts.workerUrl ?? new URL('./open-worker.js', import.meta.url), { workerData: { identities }, resourceLimits: WORKER_LIMITS });
      worker.unref();
      worker.on('message', (answer: WorkerAnswer) => this.answered(answer));
      worker.on('error', (err) => this.fail(worker, err.message));
      worker.on('exit', (code) => this.fail(worker, `exited with code ${code}`));
      this.worker = worker;
      return worker;
    } catch (err) {
      this.broken = true;
      this.opts.logger.warn({ err: (err as Error).message }, 'cannot start the thread that opens secrets in bulk; opening them on the main thread');
      return undefined;
    } finally {
      for (const i of identities) i.privateKey.fill(0); // structured clone made the worker's copy
    }
  }

  /** (3) */
  private answered({ id, answers }: WorkerAnswer): void {
    const slice = this.inFlight.get(id);
    if (!slice) return;
    this.inFlight.delete(id);
    slice.forEach((p, i) => {
      this.counts.worker++;
      const a = answers[i];
      if (a && 'plaintext' in a) p.resolve({ plaintext: Buffer.from(a.plaintext.buffer, a.plaintext.byteOffset, a.plaintext.byteLength), version: a.version });
      else p.reject(new EnvelopeError(a?.reason ?? 'corrupt'));
    });
    if (this.queued.length > 0 && !this.closed) this.feedWorker();
    if (this.inFlight.size > 0) return;
    // Closed while these were under way: close() could not end it then (its keys are zeroed now).
    if (this.closed) return void this.stopWorker();
    this.worker?.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => void this.stopWorker(), IDLE_MS);
    this.idleTimer.unref();
  }

  /** (5) The worker we did not stop is gone (an 'error', then its 'exit'): the rest opens here. */
  private fail(worker: Worker, why: string): void {
    if (this.worker !== worker) return; // stopped by us, or already handled
    this.worker = undefined;
    this.broken = true;
    const orphans = [...this.inFlight.values()].flat();
    this.inFlight.clear();
    this.opts.logger.warn({ reason: why, waiting: orphans.length }, 'the thread that opens secrets in bulk failed; opening them on the main thread from now on');
    this.queued.unshift(...orphans);
    this.schedule();
  }

  private async stopWorker(): Promise<void> {
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    if (!worker || this.inFlight.size > 0) return;
    this.worker = undefined;
    const exited = new Promise((r) => worker.once('exit', r));
    worker.ref(); // close() awaits its exit (its keys zeroed)
    worker.postMessage('close');
    await exited;
  }
}
