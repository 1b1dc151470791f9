import { ApiException, V1MicroTime, type CoordinationV1Api, type V1Lease, type V1LeaseSpec } from '@kubernetes/client-node';
import type { Logger } from '../log.js';

export interface LeaderOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  identity: string;
  /** A holder that has not renewed for this long is presumed dead. */
  leaseDurationSeconds: number;
  /** How often the leader renews and followers look. */
  renewSeconds: number;
  logger: Logger;
  onChange: (leader: boolean) => void;
}

/**
 * One writer per cluster, the Kubernetes way: a coordination.k8s.io Lease.
 *  (1) no Lease → create it naming us;
 *  (2) we hold it → renew (an update guarded by resourceVersion: a lost race
 *      means someone else took it, and we step down);
 *  (3) someone else holds it → take it over only when its record has not changed
 *      for leaseDurationSeconds *as timed by our own clock* since we first saw it
 *      (client-go's observedTime: immune to clock skew between nodes);
 *  (4) a leader that cannot renew for leaseDurationSeconds steps down by itself,
 *      before a follower could take over, so two writers never overlap for long;
 *  (5) stop() hands the lease back (holder cleared) so a follower takes over at once.
 */
export class LeaderElector {
  leader = false;
  private timer?: NodeJS.Timeout;
  private observed?: { rv: string; at: number };
  private lastRenew = 0;
  private stopped = false;
  private running?: Promise<void>;

  constructor(private readonly opts: LeaderOptions) {}

  start(): void {
    const loop = async () => {
      if (this.stopped) return;
      this.running = this.tick();
      await this.running;
      if (!this.stopped) this.timer = setTimeout(loop, this.opts.renewSeconds * 1000);
    };
    void loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    if (!this.leader) return;
    try {
      const lease = await this.opts.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
      if (lease.spec?.holderIdentity === this.opts.identity) {
        lease.spec = { ...lease.spec, holderIdentity: '', acquireTime: undefined, renewTime: undefined };
        await this.opts.api.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body: lease });
      }
    } catch {
      // It expires on its own.
    }
    this.set(false);
  }

  private async tick(): Promise<void> {
    const { api, namespace, name, identity, leaseDurationSeconds } = this.opts;
    // Lease times are MicroTime: six fractional digits, or the API server refuses them.
    const now = new V1MicroTime();
    try {
      let lease: V1Lease | undefined;
      try {
        lease = await api.readNamespacedLease({ name, namespace });
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      }
      if (!lease) {
        // (1)
        await api.createNamespacedLease({
          namespace,
          body: { metadata: { name, namespace }, spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 } },
        });
        return this.renewed();
      }
      const spec: V1LeaseSpec = { ...(lease.spec ?? {}) };
      if (spec.acquireTime) spec.acquireTime = new V1MicroTime(spec.acquireTime);
      if (spec.renewTime) spec.renewTime = new V1MicroTime(spec.renewTime);
      const rv = lease.metadata?.resourceVersion ?? '';
      if (this.observed?.rv !== rv) this.observed = { rv, at: Date.now() };
      const holder = spec.holderIdentity ?? '';
      if (holder === identity) {
        // (2)
        lease.spec = { ...spec, renewTime: now, leaseDurationSeconds };
        await api.replaceNamespacedLease({ name, namespace, body: lease });
        return this.renewed();
      }
      const expired = holder === '' || Date.now() - this.observed.at > (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
      if (!expired) return this.set(false);
      // (3)
      lease.spec = { ...spec, holderIdentity: identity, acquireTime: now, renewTime: now, leaseDurationSeconds, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 };
      await api.replaceNamespacedLease({ name, namespace, body: lease });
      this.opts.logger.info({ lease: `${namespace}/${name}`, previous: holder || '(released)' }, 'took over the leader lease');
      return this.renewed();
    } catch (err) {
      const conflict = err instanceof ApiException && err.code === 409;
      if (!conflict) this.opts.logger.warn({ err: describeKubeError(err), lease: `${namespace}/${name}` }, 'leader election: cannot reach the lease; retrying');
      // (4)
      if (conflict || Date.now() - this.lastRenew > leaseDurationSeconds * 1000) this.set(false);
    }
  }

  private renewed(): void {
    this.lastRenew = Date.now();
    this.set(true);
  }

  private set(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    this.opts.logger.info({ lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity }, leader ? 'became the leader: writing Kubernetes objects' : 'not the leader: Kubernetes objects are left to the leader');
    this.opts.onChange(leader);
  }
}

/** One line from a client-node error: status code and the API's own message. */
export function describeKubeError(err: unknown): string {
  if (err instanceof ApiException) {
    let message = '';
    try {
      message = JSON.parse(err.body as string)?.message ?? '';
    } catch {
      message = String(err.body ?? '').slice(0, 200);
    }
    return `HTTP ${err.code}${message ? `: ${message}` : ''}`;
  }
  return (err as Error)?.message ?? String(err);
}
