/**
 * The fleet as the daemons report it under PREFIX/status/ (lease-bound: a dead
 * daemon's entry is gone within its TTL). Lag is how far the node's applied
 * revision trails the newest change among the keys that node watches (global/
 * and clusters/<its cluster>/): not etcd's head, which every status write (its
 * own included) moves, so an idle node shows 0. A deletion leaves no key to
 * read, so a node still behind on one shows 0 until its next change; `status
 * --wait` (against a revision) is the exact check. Everything here comes from
 * etcd: any writer of the status keys controls these strings, so callers print
 * them through `printable`.
 */
import type { Etcd3 } from 'etcd3';
import type { NodeStatus } from '../status.js';
import { printable, type Keyspace } from '../keyspace.js';
import { prefixEnd, unchangedSince, unchangedSinceRanges } from '../source/etcd-client.js';
import { rawClients } from './history.js';

export interface StatusRow extends NodeStatus {
  /** Revisions between the node's applied one and the newest change it watches. */
  lag: number;
  ageSeconds: number;
}

export interface Fleet {
  head: number;
  rows: StatusRow[];
  /** Status keys that are not a status JSON (printable). */
  skipped: string[];
}

/** One read of PREFIX/status/[cluster/], sorted by cluster then node. */
export async function readFleet(client: Etcd3, ks: Keyspace, cluster?: string): Promise<Fleet> {
  const res = await client.getAll().prefix(ks.statusPrefix(cluster)).exec();
  const head = Number(res.header.revision);
  const rows: StatusRow[] = [];
  const skipped: string[] = [];
  for (const kv of res.kvs) {
    const s = parseStatus(kv.value.toString());
    if (!s) {
      skipped.push(`${printable(kv.key.toString())}: not a status JSON (skipped)`);
      continue;
    }
    rows.push({ ...s, lag: 0, ageSeconds: Math.max(0, (Date.now() - Date.parse(s.updatedAt)) / 1000) });
  }
  const newest = new Map<string, number>();
  for (const c of new Set(rows.map((r) => r.cluster))) newest.set(c, await newestWatched(client, ks, c, head));
  for (const r of rows) r.lag = Math.max(0, newest.get(r.cluster)! - r.revision);
  rows.sort((a, b) => a.cluster.localeCompare(b.cluster) || a.node.localeCompare(b.node));
  return { head, rows, skipped };
}

/**
 * The newest mod revision under the prefixes a daemon of `cluster` watches: one
 * key-only read per prefix, sorted by mod revision. A reader not allowed to read
 * them (a status-only etcd role) falls back to `head`, the old upper bound.
 */
async function newestWatched(client: Etcd3, ks: Keyspace, cluster: string, head: number): Promise<number> {
  const { kv } = rawClients(client);
  let newest = 0;
  for (const prefix of ks.watchedPrefixes(cluster)) {
    try {
      const key = Buffer.from(prefix);
      const res = await kv.range({ key, range_end: prefixEnd(key), keys_only: true, limit: 1, sort_target: 'Mod', sort_order: 'Descend' });
      for (const kv of res.kvs) newest = Math.max(newest, Number(kv.mod_revision));
    } catch {
      return head;
    }
  }
  return newest;
}

/**
 * `status --wait`: from which revision on a daemon of `cluster` has applied
 * everything up to `target` — the newest revision in (from, target] at which
 * something it watches changed, or `from` when nothing did. An idle daemon
 * rewrites its status for a revision that changed nothing it sees only every
 * so often (status.ts), so its reported revision can trail `target` while its
 * state is already the state at `target`.
 *
 * "Nothing changed in (x, target]" is the source's confirming read (watch
 * (d)): per prefix the same count at x and at target and no key at target
 * modified after x (a delete shows in the count, a delete and re-create in the
 * mod revision). It is monotone in x, so a binary search finds the point, one
 * read-only transaction a step. Unknown (no read permission, x compacted):
 * `target`, i.e. the node's own word is needed.
 */
export async function changedUpTo(client: Etcd3, ks: Keyspace, cluster: string, from: number, target: number): Promise<number> {
  const { kv } = rawClients(client);
  const ranges = ks.watchedPrefixes(cluster).map((p) => ({ key: Buffer.from(p), end: prefixEnd(Buffer.from(p)) }));
  const unchangedFrom = async (x: number): Promise<boolean> => {
    const res = await kv.txn({ compare: [], success: ranges.flatMap((r) => unchangedSinceRanges(r, x, target).map((request_range) => ({ request_range }))), failure: [] });
    const rs = res.responses.map((r) => r.response_range!);
    return ranges.every((_, j) => unchangedSince(rs.slice(3 * j, 3 * j + 3)));
  };
  try {
    if (from >= target || (await unchangedFrom(from))) return Math.min(from, target);
    let lo = from; // changed since lo
    let hi = target; // unchanged since hi (trivially)
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (await unchangedFrom(mid)) hi = mid;
      else lo = mid;
    }
    return hi;
  } catch {
    return target;
  }
}

/** A status JSON with the fields the table needs of the right types, else undefined. */
export function parseStatus(text: string): NodeStatus | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object') return undefined;
  const s = v as Record<string, unknown>;
  if (typeof s.cluster !== 'string' || typeof s.node !== 'string' || typeof s.revision !== 'number' || typeof s.updatedAt !== 'string') return undefined;
  const e = s.lastError as Record<string, unknown> | undefined;
  if (e !== undefined && (typeof e !== 'object' || e === null || typeof e.path !== 'string' || typeof e.reason !== 'string')) return undefined;
  // Optional notes: one of the wrong shape is dropped, the row stays.
  const o = s.offline as Record<string, unknown> | undefined;
  if (o !== undefined && (typeof o !== 'object' || o === null || typeof o.since !== 'string' || typeof o.revision !== 'number' || (o.until !== undefined && typeof o.until !== 'string'))) delete s.offline;
  const h = s.held as Record<string, unknown> | undefined;
  if (h !== undefined && (typeof h !== 'object' || h === null || typeof h.count !== 'number' || typeof h.revision !== 'number' || typeof h.since !== 'string')) delete s.held;
  return v as NodeStatus;
}

/**
 * What a node's row cannot say: it served from its local snapshot at start
 * (etcd was not reachable; the status is written only once etcd answers again,
 * so `until` is nearly always there), and removals held by the mass-delete guard.
 */
function notes(r: NodeStatus): string[] {
  const who = `${r.cluster}/${r.node}`;
  const out: string[] = [];
  if (r.offline) {
    out.push(
      r.offline.until
        ? `${who}: offline since ${r.offline.since}, served from its local snapshot (revision ${r.offline.revision}); back online since ${r.offline.until}`
        : `${who}: offline since ${r.offline.since}, serving from its local snapshot (revision ${r.offline.revision})`,
    );
  }
  if (r.held) out.push(`${who}: ${r.held.count} removal(s) held by the mass-delete guard since ${r.held.since} (revision ${r.held.revision}); "confsync release --cluster ${r.cluster}" lets them go`);
  return out.map(printable);
}

/** The status table, one string per line; every etcd-sourced cell made printable. */
export function formatFleet(fleet: Fleet): string[] {
  const table = [['CLUSTER', 'NODE', 'REVISION', 'LAG', 'AGE', 'READY', 'OBJECTS', 'ERRORS', 'LAST ERROR']];
  for (const r of fleet.rows) {
    table.push(
      [
        r.cluster, r.node, String(r.revision), String(r.lag), `${Math.round(r.ageSeconds)}s`, r.ready ? 'yes' : 'no', String(r.objects), String(r.errors),
        r.lastError ? `${r.lastError.path}: ${r.lastError.reason}` : '',
      ].map(printable),
    );
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  lines.push(...fleet.rows.flatMap(notes));
  lines.push(`etcd revision ${fleet.head}; ${fleet.rows.length} live node(s)`);
  return lines;
}
