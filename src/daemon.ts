import type { Config } from './config/schema.js';
import { open } from './envelope/envelope.js';
import { loadKeyring, type Keyring } from './envelope/identity.js';
import type { Logger } from './log.js';
import { Reconciler } from './reconcile.js';
import { FileSink, warnIfPersistent } from './sink/files.js';
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
  return [`${cfg.etcd.prefix}/global/`, `${cfg.etcd.prefix}/clusters/${cfg.cluster}/`];
}

/** Build the sinks a config asks for. Shared by the daemon and `plan`. */
export async function createSinks(cfg: Config, logger: Logger): Promise<Sink[]> {
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
    });
    sinks.push(sink);
  }
  return sinks;
}

export async function loadIdentity(cfg: Config): Promise<Keyring | undefined> {
  return cfg.identity ? loadKeyring(cfg.identity) : undefined;
}

/**
 * source → envelope → desired → sinks, wired once. Returns when the loop is
 * started; `reconciler.synced` turns true after the first full sync.
 */
export async function startDaemon(cfg: Config, logger: Logger): Promise<Daemon> {
  const keyring = await loadIdentity(cfg);
  const sinks = await createSinks(cfg, logger);
  const files = cfg.sinks.files;
  if (files) {
    const secretsRoot = files.secretsRoot ?? `${files.root}/secrets`;
    if (await warnIfPersistent(secretsRoot)) {
      logger.warn({ secretsRoot }, 'secrets root is on a persistent filesystem; plaintext secrets belong on tmpfs (e.g. under /run)');
    }
  }
  const reconciler = new Reconciler({
    prefix: `${cfg.etcd.prefix}/`,
    cluster: cfg.cluster,
    labels: cfg.labels,
    sinks,
    logger,
    openSecret: keyring ? (path, value) => open(value, path, keyring) : undefined,
  });
  const client = createEtcdClient(cfg.etcd);
  const source = new EtcdSource({ client, prefixes: watchedPrefixes(cfg), logger });
  let state: ConnectionState = 'connecting';
  let lastState: ConnectionState | undefined;
  source.start((event) => {
    if (event.type === 'state') {
      state = event.state;
      if (state !== lastState && state !== 'backoff') logger.info({ state, detail: event.detail }, 'etcd source state');
      lastState = state;
      return;
    }
    if (event.type === 'snapshot') logger.info({ revision: event.revision, keys: event.kvs.length }, 'listed etcd; reconciling everything');
    reconciler.handle(event);
  });
  for (const sink of sinks) await sink.watchDrift?.(reconciler.markDrift);
  const resync = setInterval(() => reconciler.resync(), cfg.resyncSeconds * 1000);
  resync.unref();
  logger.info({ cluster: cfg.cluster, node: cfg.node, endpoints: cfg.etcd.endpoints, prefix: cfg.etcd.prefix, sinks: sinks.map((s) => s.name) }, 'confsync started');

  return {
    reconciler,
    state: () => state,
    async stop() {
      clearInterval(resync);
      await source.close();
      client.close();
      await reconciler.close();
      for (const sink of sinks) await sink.close();
      keyring?.dispose();
    },
  };
}
