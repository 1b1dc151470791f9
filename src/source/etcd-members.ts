import { castGrpcError, type Etcd3 } from 'etcd3';

/**
 * Which etcd member the source talks to, chosen here rather than by etcd3's pool
 * (which shuffles hosts at random, so a re-opened watch landed on the member that
 * had just hung one time in three):
 *
 *  (a) a member that failed (silent stream, deadline, error, no leader) is
 *      suspected for a while and only used when every other member is suspected
 *      too — then the one suspected longest ago; so the bad member is retried
 *      later, never forgotten (it may be the only one left);
 *  (b) otherwise the members are used in turn, from a random start, so a fleet
 *      spreads its watches;
 *  (c) every call carries etcd's require-leader metadata (`hasleader: true`, what
 *      clientv3's WithRequireLeader sends): a member without a leader refuses the
 *      call, and ends a watch it carries as soon as it loses its leader, rather
 *      than serving stale data from behind a partition.
 *
 * The gRPC channels, credentials and auth token are still etcd3's (its pool's hosts).
 */
export class EtcdMembers {
  private readonly pool: Pool;
  private readonly suspectedAt: number[];
  private next: number;

  constructor(
    client: Etcd3,
    private readonly suspectMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {
    this.pool = (client as unknown as { pool: Pool }).pool;
    this.suspectedAt = this.pool.hosts.map(() => -Infinity);
    this.next = Math.floor(Math.random() * this.pool.hosts.length);
  }

  get size(): number {
    return this.pool.hosts.length;
  }

  name(i: number): string {
    return this.pool.hosts[i]!.host;
  }

  /** (a)(b) The member to use next. */
  pick(): number {
    const n = this.pool.hosts.length;
    const t = this.now();
    for (let k = 0; k < n; k++) {
      const i = (this.next + k) % n;
      if (t - this.suspectedAt[i]! >= this.suspectMs) {
        this.next = (i + 1) % n;
        return i;
      }
    }
    let oldest = 0;
    for (let i = 1; i < n; i++) if (this.suspectedAt[i]! < this.suspectedAt[oldest]!) oldest = i;
    return oldest;
  }

  /**
   * (a) Member `i` failed us. Its channel is kept: closing it (etcd3's
   * resetAllServices) only half-closes the connection, and grpc-js ends every
   * stream still on it at the next keepalive ping, up to 10 s later — a stream we
   * had opened again meanwhile. A connection that is really dead (a hung host that
   * keeps TCP up) is ended by the keepalive itself (10 s without traffic, then a
   * ping unanswered for 5 s: etcd-client.ts), and a watch moves to another member
   * at once anyway.
   */
  suspect(i: number): void {
    this.suspectedAt[i] = this.now();
  }

  /** (c) A Watch stream on member `i`. */
  async watch(i: number): Promise<WatchStream> {
    const client = this.pool.hosts[i]!.getServiceClient('Watch') as { watch(meta: unknown, opts: object): WatchStream };
    return client.watch(await this.metadata(), {});
  }

  /** (c) A unary KV call on member `i`, with a deadline; errors are etcd3's typed errors. */
  async kv<Res>(i: number, method: 'range' | 'txn', req: object, deadlineMs: number): Promise<Res> {
    const client = this.pool.hosts[i]!.getServiceClient('KV') as Record<string, (req: object, meta: unknown, opts: object, cb: (err: Error | null, res: Res) => void) => void>;
    const meta = await this.metadata();
    return new Promise<Res>((resolve, reject) =>
      client[method]!(req, meta, { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (!err) return resolve(res);
        const cast = castGrpcError(err);
        if (/invalid auth token/i.test(cast.message)) this.pool.authenticator.invalidateMetadata();
        reject(cast);
      }),
    );
  }

  /** The etcd version member `i` reports (Maintenance.Status), e.g. "3.4.23". */
  async version(i: number, deadlineMs: number): Promise<string> {
    const client = this.pool.hosts[i]!.getServiceClient('Maintenance') as Record<string, (req: object, meta: unknown, opts: object, cb: (err: Error | null, res: { version: string }) => void) => void>;
    const meta = await this.metadata();
    return new Promise<string>((resolve, reject) =>
      client.status!({}, meta, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(castGrpcError(err)) : resolve(res.version))),
    );
  }

  /** A stream error whose cause is an expired auth token: the next call fetches a new one. */
  noteError(err: Error): void {
    if (/invalid auth token/i.test(err.message)) this.pool.authenticator.invalidateMetadata();
  }

  private async metadata(): Promise<unknown> {
    // A copy: with auth, etcd3 caches one Metadata (the token) for every call it makes.
    const meta = (await this.pool.authenticator.getMetadata()).clone();
    meta.set('hasleader', 'true');
    return meta;
  }
}

export interface WatchStream {
  end(): void;
  cancel?(): void;
  write(x: unknown): void;
  removeAllListeners(): void;
  on(e: string, f: (...a: any[]) => void): unknown;
}

interface GrpcMetadata {
  clone(): GrpcMetadata;
  set(key: string, value: string): void;
}

interface Pool {
  hosts: { host: string; getServiceClient(name: string): unknown; resetAllServices(): void }[];
  authenticator: { getMetadata(): Promise<GrpcMetadata>; invalidateMetadata(): void };
}
