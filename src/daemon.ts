import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Config } from './config/schema.js';
import { loadKeyring, type Keyring } from './envelope/identity.js';
import { OpenPool } from './envelope/open-pool.js';
import { Keyspace } from './keyspace.js';
import type { Logger } from './log.js';
import { HeapPacer } from './heap-pacer.js';
import { Hooks } from './reactions/hooks.js';
import { prepareTemplates } from './render/load.js';
import { Renderer } from './render/renderer.js';
import { Metrics, serveMetrics, type Health } from './metrics.js';
import type { ReconcileObserver } from './reconcile/events.js';
import { Reconciler } from './reconcile/reconciler.js';
import { replayGuarded } from './reconcile/secrets.js';
import { HighWater } from './state/highwater.js';
import { ensurePrivateDir } from './state/durable-file.js';
import { DEFAULT_STATE_DIR, FILE_STAMPS_FILE, isInside, stateDirToRead } from './state/location.js';
import { loadSnapshot, SnapshotWriter, SourceKeys, type LoadedBase } from './state/snapshot.js';
import { StatusReporter, statusSnapshot } from './status.js';
import { VERSION } from './version.js';
import { FileSink, warnIfPersistent } from './sink/files.js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { LeaderElector } from './sink/kube-leader.js';
import type { Sink } from './sink/types.js';
import { createEtcdClient } from './source/etcd-client.js';
import { EtcdSource } from './source/etcd.js';
import type { ConnectionState } from './source/types.js';

export interface Daemon {
  reconciler: Reconciler;
  /** The source's latest connection state. */
  state(): ConnectionState;
  stop(): Promise<void>;
}

/** What a daemon of this cluster reads: global and its own scope, nothing else (least privilege). */
export function watchedPrefixes(cfg: Config): string[] {
  return new Keyspace(cfg.etcd.prefix).watchedPrefixes(cfg.cluster);
}

/**
 * Build the sinks a config asks for. Shared by the daemon and `plan`.
 * `stampsFile`: the file sink keeps its stamps there across a restart (the daemon's; `plan` keeps none).
 */
export async function createSinks(cfg: Config, logger: Logger, isLeader?: () => boolean, kubeConfig?: KubeConfig, stampsFile?: string): Promise<Sink[]> {
  const sinks: Sink[] = [];
  const files = cfg.sinks.files;
  if (files) {
    const sink = new FileSink({
      root: files.root,
      secretsRoot: files.secretsRoot,
      configFileMode: files.configFileMode,
      secretFileMode: files.secretFileMode,
      uid: files.uid,
      gid: files.gid,
      logger: logger.child({ sink: 'files' }),
      stampsFile,
    });
    sinks.push(sink);
  }
  const kube = cfg.sinks.kubernetes;
  if (kube?.enabled) {
    // @kubernetes/client-node is ~70 MB of heap and 0.5 s to load: only when asked for.
    const { KubernetesSink, kubeConfigFor } = await import('./sink/kubernetes.js');
    sinks.push(
      new KubernetesSink({
        kubeConfig: kubeConfig ?? kubeConfigFor(kube),
        fieldManager: kube.fieldManager,
        createNamespaces: kube.createNamespaces,
        logger: logger.child({ sink: 'kubernetes' }),
        isActive: isLeader,
      }),
    );
  }
  return sinks;
}

/**
 * The one reconcile loop for this config: the daemon and `plan` both build it here.
 * `marks`: replay high-water marks (the daemon's are in stateDir; default in memory).
 */
export function createReconciler(
  cfg: Config,
  sinks: Sink[],
  logger: Logger,
  keyring: Keyring | undefined,
  observers: ReconcileObserver[] = [],
  marks: HighWater = HighWater.inMemory(logger),
): Reconciler {
  const pool = keyring && new OpenPool(keyring, { logger });
  return new Reconciler({
    prefix: `${cfg.etcd.prefix}/`,
    cluster: cfg.cluster,
    node: cfg.node,
    guard: cfg.guard,
    labels: cfg.labels,
    sinks,
    logger,
    // Many opens at once (a start, a rewrap) go to a worker thread; one changed secret opens here.
    openSecret: pool ? replayGuarded(pool.open, marks) : undefined,
    closeOpener: pool && (() => pool.close()),
    retryMaxMs: cfg.limits.retryMaxSeconds * 1000,
    limits: { maxKeys: cfg.limits.maxObjectKeys, maxBytes: cfg.limits.maxObjectBytes },
    observers,
  });
}

export async function loadIdentity(cfg: Config): Promise<Keyring | undefined> {
  return cfg.identity ? loadKeyring(cfg.identity) : undefined;
}

/**
 * source → envelope → desired → sinks, wired once. Returns when the loop is
 * started; `reconciler.progress.synced` turns true after the first full sync.
 * `secretsOnDiskOk`: no warning for a secrets root on a persistent disk (dev).
 */
export async function startDaemon(cfg: Config, logger: Logger, opts: { secretsOnDiskOk?: boolean } = {}): Promise<Daemon> {
  // Armed until the first sync and its snapshot write are done (heap-pacer.ts).
  const pacer = new HeapPacer(logger);
  pacer.arm();
  // First: a template refused (unreadable, invalid, reading secrets into a public file) stops the start (exit 2).
  const templates = prepareTemplates(cfg);
  const keyring = await loadIdentity(cfg);
  // The state dir is ours alone (0700): not a dir the sinks serve to readers.
  const files = cfg.sinks.files;
  const servedRoot = files && [files.root, files.secretsRoot ?? `${files.root}/secrets`].find((root) => isInside(cfg.stateDir, root));
  if (keyring && servedRoot) {
    logger.warn(
      { stateDir: cfg.stateDir, root: servedRoot },
      `stateDir is inside a files root that others read (${servedRoot}): they can read the sealed snapshot and the replay marks; set stateDir to a dir of its own (default ${DEFAULT_STATE_DIR}; docs/operations.md, "State dir")`,
    );
  }
  if (keyring) await ensurePrivateDir(cfg.stateDir, logger, !servedRoot).catch(() => undefined); // HighWater.load says why it cannot
  // Up to 0.1.0 the default stateDir was the files root: read that once (state/location.ts).
  const readFrom = keyring ? await stateDirToRead(cfg.stateDir, logger) : cfg.stateDir;
  // Replay marks matter only to a daemon that opens secrets: no state dir otherwise.
  const marks = keyring ? await HighWater.load(cfg.stateDir, logger, readFrom) : HighWater.inMemory(logger);
  // The local snapshot is sealed to our identity: none without one (nothing to seal it to).
  // Its journal goes on from where it is (SnapshotWriter.adopt) when it is read from our own state dir.
  let loadedBase: LoadedBase | undefined;
  const snapshot = keyring
    ? await loadSnapshot(readFrom, { cluster: cfg.cluster, prefix: cfg.etcd.prefix, keyring }, logger, readFrom === cfg.stateDir ? (b) => (loadedBase = b) : undefined)
    : undefined;
  pacer.checkpoint(); // the snapshot file's text and its parse are garbage now
  if (!keyring) logger.info('no identity configured: no local snapshot is kept (it is sealed to the identity), so a start with etcd down serves nothing new and every start lists etcd');
  // Marks only go up: the snapshot's cover a lost or older highwater.json.
  if (snapshot) marks.merge(snapshot.marks);
  let elector: LeaderElector | undefined;
  // One kubeconfig for the sink, rolling restarts and leader election.
  const kube = cfg.sinks.kubernetes;
  const kubeMod = kube?.enabled ? await import('./sink/kubernetes.js') : undefined;
  const kc = kube && kubeMod ? kubeMod.kubeConfigFor(kube) : undefined;
  const sinks = await createSinks(cfg, logger, () => elector?.leader ?? true, kc, path.join(cfg.stateDir, FILE_STAMPS_FILE));
  // `confsync dev` keeps its throw-away secrets next to its data and says so itself.
  if (files && !opts.secretsOnDiskOk) {
    const secretsRoot = files.secretsRoot ?? `${files.root}/secrets`;
    if (await warnIfPersistent(secretsRoot)) {
      logger.warn({ secretsRoot }, 'secrets root is on a persistent filesystem; plaintext secrets belong on tmpfs (e.g. under /run)');
    }
  }
  const metrics = new Metrics();
  const hooks = new Hooks(cfg.hooks, logger);
  metrics.hookCounters = hooks.counters;
  const renderer = new Renderer(templates, {
    prefix: cfg.etcd.prefix,
    cluster: cfg.cluster,
    labels: cfg.labels,
    logger,
    source: { desired: () => reconciler.desiredObjects(), template: (name) => reconciler.store.template(name), synced: () => reconciler.progress.synced },
  });
  metrics.templateCounters = renderer.counters;
  const fileSink = sinks.find((s): s is FileSink => s instanceof FileSink);
  if (fileSink) metrics.preparedCounts = () => fileSink.preparedCounts();
  const restarts = kc && kube?.rollingRestarts ? new (await import('./reactions/restarts.js')).KubeRestarts(kc, logger) : undefined;
  let status: StatusReporter | undefined;
  const pokeStatus: ReconcileObserver = (e) => e.type === 'idle' && status?.poke();
  let writer: SnapshotWriter | undefined;
  // After each applied batch, once etcd confirmed our state (never the offline one again).
  const sourceKeys = new SourceKeys();
  const saveSnapshot: ReconcileObserver = (e) => e.type === 'idle' && reconciler.progress.synced && writer?.changed(sourceKeys.revision);
  // The periodic resync (and the file sink's drift watch) start after the first full
  // sync: during a cold start every object dir is ours and new (a watcher would only
  // rescan the namespace dirs as they fill), and a resync due mid-way would queue
  // everything again. A hand change made before the watch is up waits for the resync.
  let resync: NodeJS.Timeout | undefined;
  const afterFirstSync: ReconcileObserver = (e) => {
    if (e.type !== 'idle' || resync || !reconciler.progress.synced) return;
    // A deep pass (each file's metadata, and the prune) every verifySeconds; links and dirs every pass.
    let lastDeep = Date.now();
    resync = setInterval(() => {
      const deep = Date.now() - lastDeep >= cfg.verifySeconds * 1000 - 50;
      if (deep) lastDeep = Date.now();
      if (deep) renderer.recheck(); // rendered at the idle point the resync ends in
      reconciler.resync(deep);
    }, cfg.resyncSeconds * 1000);
    resync.unref();
    // The sync's garbage goes before the snapshot's encode (saveSnapshot, next on this
    // step) adds its own: the peak of a cold start was that encode on top of it.
    pacer.checkpoint(true);
    void (async () => {
      // After the first local snapshot is written (saveSnapshot runs on this same idle
      // step): its encode is a one-off heap of short-lived objects, and the drift
      // watch's start (a listing of the kind roots, a watch per namespace dir) waits
      // for nothing else.
      await new Promise((r) => setImmediate(r));
      await writer?.flush();
      const started = Date.now();
      const late = sinks.filter((s) => s.watchDrift && s.driftFrom === 'firstSync');
      for (const sink of late) await sink.watchDrift!(reconciler.markDrift);
      if (late.length) logger.info({ sinks: late.map((s) => s.name), ms: Date.now() - started }, 'drift watch started');
      pacer.disarm();
    })().catch((err: Error) => logger.warn({ err: err.message }, 'drift watch not started; hand changes are repaired at the periodic resync only'));
  };
  let relisted = false;
  const endRelistPacing: ReconcileObserver = (e) => {
    if (e.type === 'idle' && relisted && reconciler.progress.synced) pacer.disarm(), (relisted = false);
  };
  const reconciler = createReconciler(cfg, sinks, logger, keyring, [metrics.observe, hooks.observe, renderer.observe, ...(restarts ? [restarts.observe] : []), pokeStatus, afterFirstSync, saveSnapshot, endRelistPacing], marks);
  const progress = reconciler.progress;
  if (keyring) {
    writer = new SnapshotWriter({
      stateDir: cfg.stateDir,
      cluster: cfg.cluster,
      prefix: cfg.etcd.prefix,
      publicKeys: keyring.recipients().map((r) => r.publicKey),
      logger,
      take: () => ({ revision: sourceKeys.revision, kvs: sourceKeys.takeAll(), marks: marks.entries() }),
      takeChanges: () => {
        const changes = sourceKeys.takeChanges();
        return changes && { revision: sourceKeys.revision, ...changes, marks: marks.entries() };
      },
      minIntervalMs: cfg.snapshotIntervalSeconds * 1000,
      onWritten: (ms, _bytes, full) => metrics.snapshotWrite.observe({ kind: full ? 'full' : 'journal' }, ms / 1000),
    });
    if (snapshot) writer.loaded(snapshot.revision);
    // The source's first snapshot (offline, or resumed after its catch-up) is then a record of what moved, not a full
    // write. adopt() zeroes the loader's copy of the file key either way (a loaded base implies a writer: both need the identity).
    if (snapshot && loadedBase && writer.adopt(loadedBase)) sourceKeys.seed(snapshot.kvs, snapshot.revision);
  }
  // Two clients (one TCP connection per member still: grpc-js shares it between
  // channels of the same target and options): etcd3 closes every channel of a member
  // when one of its own calls fails (the status lease's keepalive in an outage), and a
  // closed channel's streams die at its next keepalive ping, up to 10 s later. With the
  // watch on a client of its own, the status lease's troubles never end the watch, and
  // the watch's never end the lease; together they once took turns killing each other's
  // stream every 10 s after one etcd stall, for good.
  const client = createEtcdClient(cfg.etcd);
  const statusClient = createEtcdClient(cfg.etcd);
  const source = new EtcdSource({
    client,
    prefixes: watchedPrefixes(cfg),
    logger,
    resume: snapshot,
    offlineAfterMs: 1000,
    onStartMode: (mode) => metrics.startMode.inc({ mode }),
  });
  // When etcd went away (the first failed attempt), so that its return can say how long it was gone.
  let downSince: number | undefined;
  source.start((event) => {
    if (event.type === 'held') return reconciler.handle(event); // a hint: no news of etcd, nothing to snapshot
    if (event.type === 'state') {
      // During an outage each retry passes through listing/watching: those are attempts, not news.
      if (event.state !== progress.state && event.state !== 'backoff') logger[downSince === undefined ? 'info' : 'debug']({ state: event.state }, 'etcd source state');
      if (event.state === 'backoff' && progress.state !== 'backoff') metrics.reconnects.inc();
      if (event.state === 'backoff') downSince ??= performance.now();
    } else if (downSince !== undefined && !(event.type === 'snapshot' && event.offline)) {
      // An answer from etcd (a listing, changes or progress): it is back.
      const seconds = Math.round((performance.now() - downSince) / 100) / 10;
      downSince = undefined;
      logger.info({ seconds, revision: event.revision }, `etcd reconnected after ${seconds} s`);
    }
    if (event.type === 'snapshot' && !event.offline && !event.resumed) {
      metrics.relists.inc();
      logger.info({ revision: event.revision, keys: event.kvs.length }, 'listed etcd; reconciling everything');
    }
    // A re-list after the first sync is a start's worth of garbage again (disarmed by endRelistPacing).
    if (event.type === 'snapshot' && !event.offline && resync) pacer.arm(), (relisted = true);
    if (writer) sourceKeys.note(event);
    reconciler.handle(event);
    if (event.type === 'snapshot') pacer.checkpoint(); // the list's pages are garbage now
  });
  for (const sink of sinks) if (sink.driftFrom !== 'firstSync') await sink.watchDrift?.(reconciler.markDrift);
  if (kube?.enabled && kube.leaderElection.enabled) {
    const le = kube.leaderElection;
    const { LeaderElector } = await import('./sink/kube-leader.js');
    elector = new LeaderElector({
      api: kubeMod!.coordinationApi(kc!),
      namespace: le.namespace,
      name: le.name ?? `confsync-${cfg.cluster}`,
      identity: cfg.node,
      leaseDurationSeconds: le.leaseDurationSeconds,
      renewSeconds: le.renewSeconds,
      logger,
      // A new leader converges every object: the old one may have died mid-way.
      onChange: (leader) => leader && reconciler.resync(),
    });
    elector.start();
  }

  // Ready after the first full sync, while etcd keeps answering (the source asks
  // for progress every second) and applied state keeps up with etcd's head.
  // Not ready also while a sink cannot apply (Kubernetes API unreachable, disk full): the files or objects are behind etcd.
  const health: Health = { notReady: () => progress.notReady(cfg.metrics.stallSeconds) ?? reconciler.sinkStall(cfg.metrics.stallSeconds) };
  const server = cfg.metrics.listen ? await serveMetrics(cfg.metrics.listen, metrics, health, () => metrics.sample(reconciler), logger) : undefined;
  const base = { cluster: cfg.cluster, node: cfg.node, startedAt: new Date().toISOString(), version: VERSION };
  status = new StatusReporter({
    client: statusClient,
    key: new Keyspace(cfg.etcd.prefix).statusKey(cfg.cluster, cfg.node),
    ttlSeconds: cfg.status.leaseTtlSeconds,
    intervalSeconds: cfg.status.intervalSeconds,
    logger,
    snapshot: () => statusSnapshot(reconciler, base, !health.notReady(), renderer),
    changed: () => progress.changed,
  });
  status.start();
  logger.info(
    { cluster: cfg.cluster, node: cfg.node, endpoints: cfg.etcd.endpoints, prefix: cfg.etcd.prefix, sinks: sinks.map((s) => s.name), metrics: cfg.metrics.listen },
    'confsync started',
  );

  return {
    reconciler,
    state: () => progress.state,
    async stop() {
      clearInterval(resync);
      pacer.disarm(false);
      await elector?.stop();
      await status?.close();
      server?.close();
      await source.close();
      client.close();
      statusClient.close();
      // (5) of state/snapshot.ts: the last applied state, so the next start resumes from it.
      await writer?.close();
      await reconciler.close();
      await renderer.close();
      await marks.close();
      await hooks.close();
      await restarts?.close();
      for (const sink of sinks) await sink.close();
      keyring?.dispose();
    },
  };
}
