import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from './log.js';
import type { Reconciler } from './reconcile/reconciler.js';
import type { ConnectionState } from './source/types.js';

/** The JSON each daemon keeps at PREFIX/status/<cluster>/<node> (SPEC §7). Never a value. */
export interface NodeStatus {
  cluster: string;
  node: string;
  /** Last applied etcd revision. */
  revision: number;
  updatedAt: string;
  startedAt: string;
  objects: number;
  errors: number;
  /** Objects a sink is currently failing on (retried with backoff). */
  failing: number;
  /** Removals held by the mass-delete guard, waiting for `confsync release`. */
  held?: { count: number; revision: number; since: string };
  lastError?: { path: string; reason: string };
  /** Templates (render/): failed renders, checks or writes since start, and the last one (name + reason, never a value). */
  templates?: { failed: number; lastError?: { template: string; reason: string } };
  /** Served from the local snapshot at start because etcd did not answer: since, until (ISO), snapshot revision. */
  offline?: { since: string; until?: string; revision: number };
  state: ConnectionState;
  ready: boolean;
  version: string;
}

export interface StatusOptions {
  client: Etcd3;
  key: string;
  ttlSeconds: number;
  intervalSeconds: number;
  logger: Logger;
  snapshot: () => Omit<NodeStatus, 'updatedAt'>;
  /**
   * The newest revision of a change this node sees (its watched prefixes). A
   * rewrite whose only news is the revision, moved past revisions that changed
   * nothing here, waits REVISION_ONLY_MS. Without it every move is news.
   */
  changed?: () => number;
}

/**
 * Keeps the status key on a lease: when the daemon dies, keepalives stop and
 * etcd deletes the key after the TTL. A lost lease (etcd outage longer than the
 * TTL) is replaced by a new one as soon as etcd answers again.
 * The key is rewritten only when something in it changed (besides updatedAt),
 * and at least once per TTL so its age says the daemon is alive; `poke()` (after
 * each applied batch) writes within 50 ms so `status --wait` sees it promptly —
 * but at most once per `POKE_GAP_MS`: under a stream of changes every node of a
 * fleet would otherwise add one etcd write per change (and its own CPU for it).
 */
const POKE_GAP_MS = 1000;

/**
 * A status whose only change is the applied revision, moved by revisions that
 * changed nothing this node watches (other nodes' status writes, other clusters'
 * keys), is rewritten at most this often (and with the refresh every TTL/2:
 * every 5 s by default). Each status write moves etcd's revision for every
 * other node, so with a prompt rewrite a fleet of N nodes kept itself at N
 * writes a second, idle. `status --wait` does not need the
 * rewrite: it asks etcd whether anything a node watches changed since the
 * revision the node last reported (admin/status.ts, changedUpTo).
 */
const REVISION_ONLY_MS = 10_000;

export class StatusReporter {
  private lease?: Lease;
  private timer?: NodeJS.Timeout;
  private pokeTimer?: NodeJS.Timeout;
  private last = '';
  /** The last body written, its revision zeroed; and that revision. */
  private lastShape = '';
  private lastRevision = 0;
  private lastWrite = 0;
  private writing = false;
  private closed = false;
  private ungrantedSaid = false;

  constructor(private readonly opts: StatusOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.opts.intervalSeconds * 1000);
    this.timer.unref();
    void this.tick();
  }

  /** Something changed (a revision was applied): write soon, not at the next interval. */
  poke(): void {
    if (this.pokeTimer || this.closed) return;
    const delay = Math.max(50, this.lastWrite + POKE_GAP_MS - Date.now());
    this.pokeTimer = setTimeout(() => {
      this.pokeTimer = undefined;
      void this.tick();
    }, delay);
    this.pokeTimer.unref();
  }

  async tick(): Promise<void> {
    if (this.writing || this.closed) return;
    this.writing = true;
    try {
      const snap = this.opts.snapshot();
      const body = JSON.stringify(snap);
      const stale = Date.now() - this.lastWrite > (this.opts.ttlSeconds * 1000) / 2;
      if (body === this.last && this.lease && !stale) return;
      const shape = JSON.stringify({ ...snap, revision: 0 });
      const news = (this.opts.changed?.() ?? snap.revision) > this.lastRevision || snap.revision < this.lastRevision; // (or a rebase)
      if (shape === this.lastShape && !news && this.lease && !stale && Date.now() - this.lastWrite < REVISION_ONLY_MS) return;
      if (!this.lease) this.lease = this.newLease();
      const status: NodeStatus = { ...snap, updatedAt: new Date().toISOString() };
      await this.lease.put(this.opts.key).value(JSON.stringify(status));
      this.last = body;
      this.lastShape = shape;
      this.lastRevision = snap.revision;
      this.lastWrite = Date.now();
      this.ungrantedSaid = false;
    } catch (err) {
      this.opts.logger.debug({ err: (err as Error).message, key: this.opts.key }, 'status not written; retrying on the next tick');
    } finally {
      this.writing = false;
    }
  }

  private newLease(): Lease {
    const lease = this.opts.client.lease(this.opts.ttlSeconds, { autoKeepAlive: true });
    let granted = false;
    lease.grant().then(() => (granted = true), () => undefined);
    lease.on('lost', (err) => {
      if (this.lease !== lease) return;
      if (granted) {
        this.opts.logger.warn({ err: err.message, key: this.opts.key }, 'status lease lost (etcd unreachable longer than the TTL); a new one is made when etcd answers');
      } else {
        // Never granted (etcd down at start, e.g. serving from the local snapshot): no
        // lease was lost; said once per outage, each retry at debug.
        this.opts.logger[this.ungrantedSaid ? 'debug' : 'info']({ err: err.message, key: this.opts.key }, 'status not written: etcd does not answer; retried every status interval');
        this.ungrantedSaid = true;
      }
      this.lease = undefined;
      this.last = '';
    });
    return lease;
  }

  /** Revoke the lease so the status disappears at once on a clean stop. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.pokeTimer);
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
  }
}

export function statusSnapshot(
  reconciler: Reconciler,
  base: { cluster: string; node: string; startedAt: string; version: string },
  ready: boolean,
  renderer?: { counters: ReadonlyMap<string, { failed: number }>; lastError?: { template: string; reason: string } },
): Omit<NodeStatus, 'updatedAt'> {
  const s = reconciler.stats;
  const templatesFailed = [...(renderer?.counters.values() ?? [])].reduce((n, c) => n + c.failed, 0);
  return {
    ...base,
    revision: reconciler.progress.applied,
    objects: reconciler.desiredObjects().size,
    errors: s.invalidInputs + s.decryptFailures + s.sinkErrors + templatesFailed,
    failing: reconciler.failing(),
    held: reconciler.heldDeletes(),
    lastError: s.lastError,
    offline: reconciler.progress.offline,
    state: reconciler.progress.state,
    ready,
    ...(renderer?.counters.size ? { templates: { failed: templatesFailed, lastError: renderer.lastError } } : {}),
  };
}
