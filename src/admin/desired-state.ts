import type { Etcd3 } from 'etcd3';
import type { Config } from '../config/schema.js';
import { createReconciler, watchedPrefixes } from '../daemon.js';
import type { Keyring } from '../envelope/identity.js';
import type { Logger } from '../log.js';
import type { ReconcileObserver } from '../reconcile/events.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import type { Sink } from '../sink/types.js';
import { EtcdSource } from '../source/etcd.js';

/**
 * This node's desired state from one listing of etcd, through the daemon's own
 * reconcile path (`plan`, `template render`): list what the daemon would watch,
 * apply it to a reconciler over `sinks` (planning wrappers, or none), wait until
 * every object is built.
 */
export async function desiredFromEtcd(
  cfg: Config,
  client: Etcd3,
  logger: Logger,
  keyring: Keyring | undefined,
  sinks: Sink[] = [],
  observers: ReconcileObserver[] = [],
): Promise<{ reconciler: Reconciler; revision: number }> {
  const source = new EtcdSource({ client, prefixes: watchedPrefixes(cfg), logger });
  const snapshot = await source.list();
  const reconciler = createReconciler(cfg, sinks, logger, keyring, observers);
  reconciler.handle(snapshot);
  await reconciler.whenIdle();
  return { reconciler, revision: snapshot.revision };
}
