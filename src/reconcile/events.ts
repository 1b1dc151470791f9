/**
 * What the reconcile loop reports. Reactions (metrics, hooks, rolling restarts,
 * status) subscribe to these typed events; none of them is called with a sink's
 * name as a string to compare against, and none may throw or block the loop.
 */
import type { Problem } from '../desired/build.js';
import type { DesiredObject } from '../desired/types.js';
import type { ObjectId } from '../keyspace.js';
import type { SinkKind } from '../sink/types.js';

export type ProblemCounter = 'invalidInputs' | 'decryptFailures';

export type ReconcileEvent =
  /** `sink` wrote the object; `dirtySince` is when the change that caused it arrived (performance.now()). */
  | { type: 'written'; sink: SinkKind; object: DesiredObject; dirtySince?: number }
  | { type: 'removed'; sink: SinkKind; id: ObjectId }
  /** Bad input found in etcd (once per path and reason). */
  | { type: 'problem'; counter: ProblemCounter; problem: Problem }
  /** A sink could not apply an object; retried after `retryInMs` unless `retryable` is false. */
  | { type: 'sinkError'; sink: SinkKind; id: ObjectId; error: Error; retryable: boolean; retryInMs?: number }
  /** A sink applied an object again after failing on it. */
  | { type: 'sinkRecovered'; sink: SinkKind; id: ObjectId }
  /** The mass-delete guard held a batch; `count` removals are held in all. */
  | { type: 'deletesHeld'; count: number; revision: number }
  | { type: 'deletesReleased'; count: number }
  /** The object's desired state changed (or it is gone): what templates (render/) depend on, sinks or not. */
  | { type: 'desired'; id: ObjectId }
  /** Nothing dirty and nothing in flight: everything up to `applied` is in every sink. */
  | { type: 'idle'; applied: number };

export type ReconcileObserver = (event: ReconcileEvent) => void;

/** Counters the loop keeps for status. */
export interface ReconcileStats {
  invalidInputs: number;
  decryptFailures: number;
  sinkErrors: number;
  writes: number;
  lastError?: Problem;
}
