/**
 * The mass-delete guard: the worst day for a sync tool is a mistake that spreads
 * everywhere in milliseconds (`etcdctl del --prefix /confsync/global`). When one
 * batch of changes — one etcd revision (a transaction, a `del --prefix`), or a
 * re-list after a restart or compaction — would remove more than
 * `maxDeletePercent` of the objects this daemon materializes (and at least
 * `minObjects` of them), those removals are held: files and Kubernetes objects
 * stay, everything else keeps syncing, and the hold is reported (log, metric,
 * status). It ends only when
 *  - an operator confirms: `confsync release` writes `PREFIX/clusters/<c>/@release`
 *    = `{"revision": R, "node"?: N}`; a hold taken at a revision ≤ R on a matching
 *    node is let go, or
 *  - the keys come back (the object is no longer a removal).
 * Never by itself, never by a timer.
 */
import type { Problem } from '../desired/build.js';
import type { ObjectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { ReconcileEvent } from './events.js';

export interface GuardConfig {
  enabled: boolean;
  maxDeletePercent: number;
  minObjects: number;
}

export interface Hold {
  count: number;
  /** The etcd revision of the batch that was held. */
  revision: number;
  since: string;
}

export class DeleteGuard {
  private readonly held = new Set<ObjectId>();
  private heldAt = 0;
  private since = '';

  constructor(
    private readonly cfg: GuardConfig,
    private readonly ctx: { cluster: string; logger: Logger; emit: (e: ReconcileEvent) => void; invalid: (p: Problem) => void },
  ) {}

  /**
   * A batch would remove `removals` out of `materialized` objects. Returns true
   * when this batch is held (its removals join any held earlier).
   */
  check(removals: ObjectId[], materialized: number, revision: number): boolean {
    if (!this.cfg.enabled || removals.length === 0) return false;
    const fresh = removals.filter((id) => !this.held.has(id));
    const tooMany = fresh.length >= this.cfg.minObjects && fresh.length * 100 > this.cfg.maxDeletePercent * Math.max(materialized, 1);
    if (!tooMany) return false;
    if (this.held.size === 0) this.since = new Date().toISOString();
    for (const id of fresh) this.held.add(id);
    this.heldAt = Math.max(this.heldAt, revision);
    this.ctx.logger.warn(
      { removals: removals.length, objects: materialized, revision, held: this.held.size },
      `mass delete held: one batch would remove ${removals.length} of ${materialized} objects; files and objects stay until an operator runs "confsync release --cluster ${this.ctx.cluster}" (or the keys come back)`,
    );
    this.ctx.emit({ type: 'deletesHeld', count: this.held.size, revision });
    return true;
  }

  /** Release confirmations (values of `clusters/<c>/@release`) for `node`: the ids whose removal may go now. */
  confirm(values: Buffer[], node: string | undefined): ObjectId[] {
    const out: ObjectId[] = [];
    for (const value of values) {
      const r = parseRelease(value);
      if (!r) {
        this.ctx.invalid({ path: `clusters/${this.ctx.cluster}/@release`, reason: 'not {"revision": <number>, "node"?: <string>}' });
        continue;
      }
      if (r.node !== undefined && r.node !== node) continue;
      const ids = this.release(r.revision);
      if (!ids) continue;
      this.ctx.logger.warn({ released: ids.length, confirmedRevision: r.revision }, 'held mass delete released by an operator; removing');
      this.ctx.emit({ type: 'deletesReleased', count: ids.length });
      out.push(...ids);
    }
    return out;
  }

  isHeld(id: ObjectId): boolean {
    return this.held.has(id);
  }

  /** The object exists again: it is no longer a held removal. */
  forget(id: ObjectId): void {
    this.held.delete(id);
  }

  /**
   * A confirmation arrived. Returns the ids to remove now, or undefined when it
   * does not cover the hold (older than the held batch, or for another node).
   */
  private release(confirmedRevision: number): ObjectId[] | undefined {
    if (this.held.size === 0 || confirmedRevision < this.heldAt) return undefined;
    const ids = [...this.held];
    this.held.clear();
    this.heldAt = 0;
    return ids;
  }

  state(): Hold | undefined {
    return this.held.size > 0 ? { count: this.held.size, revision: this.heldAt, since: this.since } : undefined;
  }
}

/** `{"revision": R, "node"?: N}`; undefined when the value is not one (reported by the caller). */
export function parseRelease(value: Buffer): { revision: number; node?: string } | undefined {
  try {
    const v = JSON.parse(value.toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null) return undefined;
    const { revision, node } = v as { revision?: unknown; node?: unknown; at?: unknown };
    if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) return undefined;
    if (node !== undefined && typeof node !== 'string') return undefined;
    return { revision, node };
  } catch {
    return undefined;
  }
}
