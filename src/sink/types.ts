import type { DesiredObject } from '../desired/types.js';
import type { ObjectId } from '../keyspace.js';

export type ApplyResult = 'written' | 'unchanged';

export interface ApplyOptions {
  /**
   * Part of the first full sync: many objects are applied at once, and a sink may
   * share work between them (the file sink makes them durable in batches).
   */
  bulk?: boolean;
}

/** Which materialization a sink does; reactions subscribe by this (typed), never by a free string. */
export type SinkKind = 'files' | 'kubernetes';

/**
 * Where desired objects go. Every method is idempotent. A thrown error means
 * "this object could not be brought to the desired state now": the reconciler
 * reports it, keeps the others going and retries later with backoff — unless it
 * is an `InvalidInput` (errors.ts), which is reported once and not retried. A sink never deletes or
 * modifies something it does not own (see each sink's ownership marker).
 */
export interface Sink {
  readonly name: SinkKind;
  /** Make the object exist exactly as desired; does nothing when it already does. */
  apply(obj: DesiredObject, how?: ApplyOptions): Promise<ApplyResult>;
  /** What `apply` would do, doing nothing (for `confsync plan`). */
  plan(obj: DesiredObject): Promise<'create' | 'update' | 'unchanged'>;
  /**
   * Optional: do ahead what an `apply(obj)` that will probably follow needs, and
   * show nothing (the file sink writes and fsyncs the payload dir of an update, and
   * swaps nothing). Whatever comes next — `apply` of this or another state,
   * `remove`, `discard` — takes it or throws it away. Never fails: a preparation
   * that cannot be made is simply not there.
   */
  prepare?(obj: DesiredObject): Promise<void>;
  /** Throw away what `prepare` made for `id` (no apply or remove will come for it). */
  discard?(id: ObjectId): void;
  /** Remove an object this sink owns; does nothing when it is absent. */
  remove(id: ObjectId): Promise<void>;
  /** Ids of every object this sink currently owns, for pruning after a full sync. */
  list(): Promise<ObjectId[]>;
  /**
   * Whether a listing stays good while only this daemon changes the sink: one
   * taken at the first snapshot then still holds everything the first sync's prune
   * may remove (the file sink). Not the Kubernetes sink: it lists nothing until it
   * leads, and it may come to lead during the first sync.
   */
  readonly stableListing?: boolean;
  /**
   * The periodic resync's cheap pass: of these objects (each applied before),
   * which may differ from what this sink last found in place? Without it every
   * object gets a full `apply`. `deep` also checks what the sink checks less often
   * (the file sink: each file's metadata, i.e. edits in place).
   */
  suspects?(objects: Iterable<DesiredObject>, deep: boolean): Promise<ObjectId[]>;
  /** Start reporting ids whose actual state may have drifted (hints, not facts). */
  watchDrift?(onDrift: (id: ObjectId) => void): Promise<void>;
  /**
   * When the daemon calls `watchDrift`: at start (the default; the Kubernetes
   * informers are also the sink's read cache) or once the first full sync is done
   * (the file sink: during a cold start every object dir is new and ours).
   */
  readonly driftFrom?: 'start' | 'firstSync';
  close(): Promise<void>;
}
