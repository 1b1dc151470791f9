/**
 * The console's view of the keyspace, pure: etcd changes in, three views out —
 * the convergence matrix (clusters × nodes from status/), the event stream (one
 * entry per put/delete, status changes included) and an index of which scopes
 * hold which object. The feed (feed.ts) does the I/O and the clock is a
 * parameter, so tests drive this with plain values.
 *
 * Everything here comes from etcd, written by anyone who can write it: strings
 * are sent to the page as JSON and rendered as text there, never as HTML.
 * Values: only config values and @meta text are ever looked at for a preview;
 * a secret's value (envelope or not), a recipient, an invalid key's value
 * (it may be plaintext written by hand under secrets/) is reduced to its size.
 */
import { parseStatus } from '../admin/status.js';
import { isSealed, printable, scopePath, type Keyspace, type ParsedKey } from '../keyspace.js';
import type { NodeStatus } from '../status.js';

/** A change as etcd reports it (list or watch). */
export interface KeyChange {
  key: string;
  op: 'put' | 'delete';
  /** The key's mod revision (a delete's revision for a delete). */
  rev: number;
  value?: Buffer;
}

export type EventKind = 'configmaps' | 'secrets' | 'status' | 'recipient' | 'release' | 'invalid';

/** One line of the event stream, as sent to the page. */
export interface ConsoleEvent {
  seq: number;
  rev: number;
  /** When the console saw it (ms since the epoch). */
  at: number;
  op: 'put' | 'delete';
  kind: EventKind;
  /** The key without PREFIX/, control characters escaped. */
  path: string;
  scope?: string;
  cluster?: string;
  namespace?: string;
  name?: string;
  key?: string;
  /** Bytes of the value (0 for a delete). */
  size: number;
  /** The start of a config value or @meta (UTF-8 text only); never set for anything else. */
  preview?: string;
  /** A status change in words, or why a key is invalid. */
  note?: string;
}

export type CellState = 'sync' | 'behind' | 'stale' | 'error' | 'gone';

/** One node in the matrix: what the page shows of its status (the rest of the status JSON stays here). */
export interface Cell {
  cluster: string;
  node: string;
  revision: number;
  /** Revisions between `revision` and the newest change the node watches. */
  lag: number;
  /** Seconds since the console saw the oldest change this node has not applied (0 in sync). */
  lagSeconds: number;
  /** Seconds since the node last wrote its status. */
  ageSeconds: number;
  state: CellState;
  objects: number;
  errors: number;
  failing: number;
  ready: boolean;
  /** The daemon's connection to etcd, as it reports it. */
  connection: string;
  lastError?: { path: string; reason: string };
  held?: number;
  /** When its status key vanished (the daemon stopped or its lease expired). */
  goneSince?: string;
}

export interface ClusterRow {
  cluster: string;
  nodes: Cell[];
  summary: { nodes: number; sync: number; behind: number; stale: number; error: number; gone: number; minRevision: number; maxLag: number; errors: number; state: CellState };
}

export interface Matrix {
  /** etcd's head revision as last seen. */
  head: number;
  /** Newest change under global/ (what every cluster watches). */
  newestGlobal: number;
  rows: ClusterRow[];
  at: string;
}

export const PREVIEW_CHARS = 160;
/** A node gone this long drops out of the matrix. */
const GONE_KEEP_MS = 3600_000;
/** How many data changes keep their arrival time (for lag in seconds). */
const SEEN_MAX = 100_000;

export interface ModelOptions {
  /** A status older than this is stale (the daemon rewrites it at least every TTL/2: 5 s by default). */
  staleSeconds: number;
}

const WORST: CellState[] = ['sync', 'behind', 'error', 'stale', 'gone'];
/**
 * Natural order for cluster and node names (n-2 before n-10). One collator for every
 * comparison: localeCompare with options builds one per call (a matrix of 1,000 nodes
 * took 4.4 ms with it, 1.3 ms with this).
 */
const byName = new Intl.Collator('en', { numeric: true }).compare;

/** A UTF-8 text preview, or undefined for binary values. */
function preview(value: Buffer | undefined): string | undefined {
  if (!value) return undefined;
  const head = value.subarray(0, PREVIEW_CHARS * 4);
  const text = new TextDecoder('utf-8', { fatal: false }).decode(head);
  if (text.includes('\ufffd')) return undefined;
  return printable(text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text);
}

/** What the status write changed, besides its timestamp; '' when nothing did. */
function statusNote(before: NodeStatus | undefined, after: NodeStatus): string {
  const parts: string[] = [];
  if (!before || before.revision !== after.revision) parts.push(`revision ${after.revision}`);
  if (!before || before.ready !== after.ready) parts.push(after.ready ? 'ready' : 'not ready');
  if (!before || before.errors !== after.errors) parts.push(`${after.errors} error(s)`);
  if (!before || before.state !== after.state) parts.push(String(after.state));
  if (after.lastError && (!before || before.lastError?.path !== after.lastError.path || before.lastError?.reason !== after.lastError.reason)) {
    parts.push(`last error ${after.lastError.path}: ${after.lastError.reason}`);
  }
  if ((before?.held?.count ?? 0) !== (after.held?.count ?? 0)) parts.push(`${after.held?.count ?? 0} removal(s) held`);
  return printable(parts.join(', '));
}

export class ConsoleModel {
  head = 0;
  private seq = 0;
  private newestGlobal = 0;
  private readonly newestCluster = new Map<string, number>();
  private readonly status = new Map<string, NodeStatus>();
  private readonly gone = new Map<string, { status: NodeStatus; since: number }>();
  /** object id (kind/ns/name) -> scope path -> key count. */
  private readonly objects = new Map<string, Map<string, number>>();
  private readonly recipients = new Set<string>();
  /** [revision, ms] of data changes, ascending: when the console first saw each. */
  private readonly seen: [number, number][] = [];

  constructor(
    private readonly ks: Keyspace,
    private readonly opts: ModelOptions,
    private readonly startedAt: number,
  ) {}

  /** Forget everything but the event sequence (a re-list follows; a node still there comes back from it). */
  reset(now: number): void {
    this.newestGlobal = 0;
    this.newestCluster.clear();
    for (const [id, s] of this.status) this.gone.set(id, { status: s, since: now });
    this.status.clear();
    this.objects.clear();
    this.recipients.clear();
  }

  /**
   * One change. Returns the event for the stream, or undefined for a status
   * rewrite that changed nothing but its timestamp (and for list entries, `quiet`).
   */
  apply(c: KeyChange, now: number, quiet = false): ConsoleEvent | undefined {
    this.head = Math.max(this.head, c.rev);
    const rel = this.ks.relative(c.key);
    const parsed = this.ks.parse(c.key);
    const size = c.value?.length ?? 0;
    const base = { rev: c.rev, at: now, op: c.op, path: printable(rel), size };
    if (parsed.type === 'status') return this.applyStatus(c, parsed, base, now, quiet);
    if (parsed.type === 'data' || parsed.type === 'meta') {
      const scope = scopePath(parsed.scope);
      if (parsed.scope.type === 'global') this.newestGlobal = Math.max(this.newestGlobal, c.rev);
      else this.newestCluster.set(parsed.scope.cluster, Math.max(this.newestCluster.get(parsed.scope.cluster) ?? 0, c.rev));
      this.noteSeen(c.rev, now);
      this.index(`${parsed.kind}/${parsed.namespace}/${parsed.name}`, scope, c.op === 'put' ? 1 : -1);
      if (quiet) return undefined;
      const key = parsed.type === 'meta' ? '@meta' : parsed.key;
      // A secret's value is an envelope (or, written by hand, plaintext): its size only. @meta is never secret.
      const text = parsed.type === 'meta' || !isSealed(parsed.kind) ? preview(c.value) : undefined;
      return {
        ...base, seq: ++this.seq, kind: parsed.kind, scope,
        cluster: parsed.scope.type === 'cluster' ? parsed.scope.cluster : undefined,
        namespace: parsed.namespace, name: parsed.name, key, ...(text !== undefined && { preview: text }),
      };
    }
    if (parsed.type === 'recipient') {
      if (c.op === 'put') this.recipients.add(parsed.cluster);
      else this.recipients.delete(parsed.cluster);
    }
    if (parsed.type === 'release') this.newestCluster.set(parsed.cluster, Math.max(this.newestCluster.get(parsed.cluster) ?? 0, c.rev));
    if (quiet) return undefined;
    if (parsed.type === 'recipient' || parsed.type === 'release') return { ...base, seq: ++this.seq, kind: parsed.type, cluster: parsed.cluster };
    return { ...base, seq: ++this.seq, kind: 'invalid', note: (parsed as Extract<ParsedKey, { type: 'invalid' }>).reason };
  }

  private applyStatus(c: KeyChange, p: { cluster: string; node: string }, base: Omit<ConsoleEvent, 'seq' | 'kind'>, now: number, quiet: boolean): ConsoleEvent | undefined {
    const id = `${p.cluster}/${p.node}`;
    const ev = { ...base, kind: 'status' as const, cluster: p.cluster, name: p.node };
    const before = this.status.get(id);
    if (c.op === 'delete') {
      this.status.delete(id);
      if (before) this.gone.set(id, { status: before, since: now });
      return quiet ? undefined : { ...ev, seq: ++this.seq, note: 'status gone (daemon stopped, or its lease expired)' };
    }
    const s = parseStatus(c.value?.toString() ?? '');
    if (!s || s.cluster !== p.cluster || s.node !== p.node) {
      this.status.delete(id);
      return quiet ? undefined : { ...ev, seq: ++this.seq, note: 'not a status JSON for this key (ignored)' };
    }
    this.status.set(id, s);
    this.gone.delete(id);
    const note = statusNote(before, s);
    if (quiet || note === '') return undefined;
    return { ...ev, seq: ++this.seq, note };
  }

  private noteSeen(rev: number, now: number): void {
    const last = this.seen[this.seen.length - 1];
    if (last && last[0] >= rev) return;
    this.seen.push([rev, now]);
    if (this.seen.length > SEEN_MAX) this.seen.splice(0, this.seen.length - SEEN_MAX / 2);
  }

  /** When the console first saw a change newer than `rev` (its start time if before it). */
  private firstSeenAfter(rev: number): number {
    let lo = 0;
    let hi = this.seen.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.seen[mid]![0] <= rev) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? this.startedAt : this.seen[lo]?.[1] ?? this.startedAt;
  }

  private index(id: string, scope: string, delta: number): void {
    const scopes = this.objects.get(id) ?? new Map<string, number>();
    const n = (scopes.get(scope) ?? 0) + delta;
    if (n > 0) scopes.set(scope, n);
    else scopes.delete(scope);
    if (scopes.size > 0) this.objects.set(id, scopes);
    else this.objects.delete(id);
  }

  /** Scope paths that hold keys of this object (`global`, `clusters/<c>`). */
  scopesOf(id: string): string[] {
    return [...(this.objects.get(id)?.keys() ?? [])].sort((a, b) => (a === 'global' ? -1 : b === 'global' ? 1 : a.localeCompare(b)));
  }

  get objectCount(): number {
    return this.objects.size;
  }

  /** Every cluster the keyspace names: status, recipients, override scopes. */
  clusters(): string[] {
    const names = new Set<string>([...this.recipients, ...this.newestCluster.keys()]);
    for (const s of this.status.values()) names.add(s.cluster);
    return [...names].sort();
  }

  matrix(now: number): Matrix {
    for (const [id, g] of this.gone) if (now - g.since > GONE_KEEP_MS) this.gone.delete(id);
    const byCluster = new Map<string, Cell[]>();
    const add = (s: NodeStatus, goneSince?: number) => {
      const newest = Math.max(this.newestGlobal, this.newestCluster.get(s.cluster) ?? 0);
      const lag = Math.max(0, newest - s.revision);
      const ageSeconds = Math.max(0, (now - Date.parse(s.updatedAt)) / 1000);
      const erring = s.failing > 0 || s.lastError !== undefined;
      const state: CellState =
        goneSince !== undefined ? 'gone' : ageSeconds > this.opts.staleSeconds ? 'stale' : erring ? 'error' : lag > 0 ? 'behind' : 'sync';
      const cell: Cell = {
        cluster: printable(s.cluster), node: printable(s.node), revision: s.revision, lag, ageSeconds, state,
        lagSeconds: lag > 0 ? Math.max(0, (now - this.firstSeenAfter(s.revision)) / 1000) : 0,
        objects: s.objects, errors: s.errors, failing: s.failing, ready: s.ready === true, connection: printable(String(s.state)),
        ...(s.lastError && { lastError: { path: printable(s.lastError.path), reason: printable(s.lastError.reason) } }),
        ...(s.held && { held: s.held.count }),
        ...(goneSince !== undefined && { goneSince: new Date(goneSince).toISOString() }),
      };
      const list = byCluster.get(s.cluster) ?? [];
      list.push(cell);
      byCluster.set(s.cluster, list);
    };
    for (const s of this.status.values()) add(s);
    for (const g of this.gone.values()) add(g.status, g.since);
    const rows: ClusterRow[] = [...byCluster.entries()]
      .sort((a, b) => byName(a[0], b[0]))
      .map(([cluster, nodes]) => {
        nodes.sort((a, b) => byName(a.node, b.node));
        const count = (st: CellState) => nodes.filter((n) => n.state === st).length;
        const live = nodes.filter((n) => n.state !== 'gone');
        return {
          cluster,
          nodes,
          summary: {
            nodes: nodes.length, sync: count('sync'), behind: count('behind'), stale: count('stale'), error: count('error'), gone: count('gone'),
            minRevision: live.length ? Math.min(...live.map((n) => n.revision)) : 0,
            maxLag: Math.max(0, ...live.map((n) => n.lag)),
            errors: nodes.reduce((sum, n) => sum + n.errors, 0),
            state: nodes.reduce<CellState>((w, n) => (WORST.indexOf(n.state) > WORST.indexOf(w) ? n.state : w), 'sync'),
          },
        };
      });
    return { head: this.head, newestGlobal: this.newestGlobal, rows, at: new Date(now).toISOString() };
  }
}
