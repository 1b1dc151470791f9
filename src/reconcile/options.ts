/** What the one reconcile loop is built from (daemon.ts `createReconciler`, `plan`, tests). */
import type { BuildLimits } from '../desired/build.js';
import type { Logger } from '../log.js';
import type { Sink } from '../sink/types.js';
import type { ReconcileObserver } from './events.js';
import type { GuardConfig } from './guard.js';
import type { OpenSecret } from './secrets.js';

export interface ReconcilerOptions {
  /** Key prefix with trailing slash, e.g. "/confsync/". */
  prefix: string;
  cluster: string;
  /** This node's name: a release confirmation may name one node. */
  node?: string;
  /** The mass-delete guard; off when omitted. */
  guard?: GuardConfig;
  labels: Record<string, string>;
  sinks: Sink[];
  logger: Logger;
  openSecret?: OpenSecret;
  /** Ends what `openSecret` runs on (envelope/open-pool.ts's worker thread); called by close(). */
  closeOpener?: () => Promise<void>;
  /** Objects reconciled at once; one slow object never blocks the rest. */
  concurrency?: number;
  /** First retry delay after a sink failed on an object; doubles up to `retryMaxMs`. */
  retryMs?: number;
  retryMaxMs?: number;
  limits?: BuildLimits;
  observers?: ReconcileObserver[];
}
