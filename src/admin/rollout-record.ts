/**
 * A staged rollout's record at `PREFIX/rollouts/<id>` (JSON) and the guarded read
 * and write every step goes through (the steps: ./rollout.ts; making a record at
 * start: ./rollout-plan.ts).
 *
 * The record holds everything a later `rollout resume` needs, so a CLI that died at
 * any step can be replaced by another one: the object, the new values (config: the
 * bytes; secrets: only sealed envelopes — one per wave cluster, sealed to that
 * cluster and the admins, and one for the global key, sealed to every pinned
 * recipient — never a plaintext), the waves with their resolved cluster lists and
 * per-wave progress, and the mod revision each global key had at start (a different
 * one later means someone else changed it: the rollout halts).
 *
 * Every write compares the record's own mod revision (optimistic lock): two CLIs
 * driving one rollout cannot both advance it; the loser stops and says so. Anyone
 * who can write etcd can write a record, so one is validated before it is used.
 */
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import { OperationFailed, UserError } from '../errors.js';
import { clusterError, clusterScope, dataKeyError, GLOBAL, isKind, nameError, namespaceError, objectId, printable, type Keyspace, type ObjectRef } from '../keyspace.js';
import { rawClients } from './history.js';

export type RolloutState = 'running' | 'paused' | 'halted' | 'aborted' | 'promoted';

/**
 * A wave's step: `pending` (overrides not written yet), `applying` (written at
 * `revision`; waiting for every live node of its clusters), `gating` (all applied;
 * watching for errors until `gateUntil`), `done`.
 */
export type WavePhase = 'pending' | 'applying' | 'gating' | 'done';

/** A node's error picture before the wave's write: what counts as new after it. */
export interface Baseline {
  errors: number;
  /** lastError already named this object before the write (an old problem: not counted). */
  named: boolean;
}

export interface Wave {
  name: string;
  globs: string[];
  clusters: string[];
  phase: WavePhase;
  /** The revision of the transaction that wrote this wave's overrides. */
  revision?: number;
  /** `<cluster>/<node>` → its errors before the write. */
  baseline?: Record<string, Baseline>;
  startedAt?: string;
  appliedAt?: string;
  gateUntil?: string;
  doneAt?: string;
}

export interface Rollout {
  id: string;
  ref: ObjectRef;
  /** Config: key → base64 of the new bytes. Secrets: absent (see `sealed`). */
  values?: Record<string, string>;
  /** Secrets: `global` key → envelope, and `clusters[c]` key → envelope bound to clusters/c/…. */
  sealed?: { global: Record<string, string>; clusters: Record<string, Record<string, string>> };
  keys: string[];
  /** Each global key's mod revision at start ("0": it did not exist). */
  globalMods: Record<string, string>;
  waves: Wave[];
  /** Index of the wave being worked on (= waves.length once every wave is done). */
  current: number;
  state: RolloutState;
  /** Why it halted or was paused/aborted: one line, names only. */
  reason?: string;
  /** Halted because someone else changed a key: resume is refused, abort is the way out. */
  conflict?: boolean;
  options: { gateSeconds: number; maxErrors: number; applyTimeoutSeconds: number };
  createdAt: string;
  updatedAt: string;
  /** Revision of the promotion or abort transaction. */
  finalRevision?: number;
}

/** A record as read, with the mod revision every write of it must compare. */
export interface Loaded {
  rollout: Rollout;
  mod: string;
}

export function alreadyRunning(ref: ObjectRef, other: string): OperationFailed {
  return new OperationFailed(`${objectId(ref.kind, ref.namespace, ref.name)} already has a rollout in progress: ${printable(other)} (confsync rollout status ${printable(other)}; abort it or let it finish first)`);
}

/** The bytes a wave cluster's override (or, with `cluster` undefined, the global key) gets. */
export function valueFor(r: Rollout, key: string, cluster?: string): Buffer {
  if (r.values) return Buffer.from(r.values[key]!, 'base64');
  const text = cluster === undefined ? r.sealed!.global[key] : r.sealed!.clusters[cluster]?.[key];
  if (text === undefined) throw new OperationFailed(`rollout ${r.id}: no sealed value for ${cluster ?? 'global'} ${key} in its record`);
  return Buffer.from(text);
}

export async function loadRollout(client: Etcd3, ks: Keyspace, id: string): Promise<Loaded> {
  const res = await client.get(ks.rolloutKey(id)).exec();
  const kv = res.kvs[0];
  if (!kv) throw new UserError(`no rollout ${printable(id)} (confsync rollout ls lists them)`);
  return { rollout: parseRollout(kv.value.toString(), id), mod: kv.mod_revision };
}

/** A record read from etcd: anyone who can write etcd can write it, so its shape is checked before use. */
export function parseRollout(text: string, id: string): Rollout {
  const bad = (why: string) => new OperationFailed(`rollouts/${printable(id)}: not a rollout record confsync can use (${why})`);
  let r: Rollout;
  try {
    r = JSON.parse(text) as Rollout;
  } catch {
    throw bad('not JSON');
  }
  if (!r || typeof r !== 'object' || r.id !== id) throw bad('id');
  const ref = r.ref as Partial<ObjectRef> | undefined;
  if (!ref || !isKind(ref.kind) || typeof ref.namespace !== 'string' || typeof ref.name !== 'string' || namespaceError(ref.namespace) || nameError(ref.name)) throw bad('ref');
  if (!Array.isArray(r.keys) || r.keys.length === 0 || r.keys.some((k) => typeof k !== 'string' || dataKeyError(k))) throw bad('keys');
  if (!Array.isArray(r.waves) || r.waves.some((w) => !w || typeof w.name !== 'string' || clusterError(w.name) || !Array.isArray(w.clusters) || w.clusters.some((c) => typeof c !== 'string' || clusterError(c)))) throw bad('waves');
  if (!Number.isInteger(r.current) || r.current < 0 || r.current > r.waves.length) throw bad('current');
  if (!STATES.includes(r.state) || !r.options || ![r.options.gateSeconds, r.options.maxErrors, r.options.applyTimeoutSeconds].every((n) => Number.isFinite(n) && n >= 0)) throw bad('state or options');
  if (!r.globalMods || typeof r.globalMods !== 'object') throw bad('globalMods');
  return r;
}

const STATES: readonly RolloutState[] = ['running', 'paused', 'halted', 'aborted', 'promoted'];

/** Every record under rollouts/ (newest first); records that do not parse are reported in `skipped`. */
export async function listRollouts(client: Etcd3, ks: Keyspace): Promise<{ rollouts: Rollout[]; skipped: string[] }> {
  const res = await client.getAll().prefix(ks.rolloutsPrefix()).exec();
  const rollouts: Rollout[] = [];
  const skipped: string[] = [];
  for (const kv of res.kvs) {
    const parsed = ks.parse(kv.key.toString());
    if (parsed.type !== 'rollout') continue;
    try {
      rollouts.push(parseRollout(kv.value.toString(), parsed.id));
    } catch (err) {
      skipped.push((err as Error).message);
    }
  }
  rollouts.sort((a, b) => b.id.localeCompare(a.id));
  return { rollouts, skipped };
}

/** Thrown when the record moved under us: another CLI advanced, paused or aborted the rollout. */
export class RolloutMoved extends OperationFailed {
  override name = 'RolloutMoved';
}

/**
 * Writes `next` in one transaction with `ops`, if the record still has mod revision
 * `mod` and every extra compare holds. Returns the transaction's revision. A failed
 * record compare is RolloutMoved; a failed extra compare returns undefined (the
 * caller decides: e.g. someone changed a global key).
 */
export async function writeRollout(client: Etcd3, ks: Keyspace, loaded: Loaded, next: Rollout, ops: IRequestOp[] = [], extra: ICompare[] = []): Promise<{ revision: number; mod: string } | undefined> {
  const { kv } = rawClients(client);
  const recordKey = Buffer.from(ks.rolloutKey(next.id));
  next.updatedAt = new Date().toISOString();
  const mine: ICompare = { key: recordKey, target: 'Mod', result: 'Equal', mod_revision: loaded.mod };
  const res = await kv.txn({
    compare: [mine, ...extra],
    success: [...ops, { request_put: { key: recordKey, value: Buffer.from(JSON.stringify(next)) } }],
    failure: [{ request_range: { key: recordKey } }],
  });
  if (res.succeeded) return { revision: Number(res.header.revision), mod: res.header.revision };
  const now = res.responses[0]?.response_range?.kvs[0];
  if (!now || now.mod_revision !== loaded.mod) throw new RolloutMoved(`rollout ${next.id} was changed by another confsync (see "confsync rollout status ${next.id}"); this one stops`);
  return undefined;
}

/** The compares that fail when someone else changed a global key of the rollout since start. */
export function globalGuards(ks: Keyspace, r: Rollout): ICompare[] {
  return r.keys.map((k) => {
    const key = Buffer.from(ks.dataKey(GLOBAL, r.ref, k));
    return r.globalMods[k] === '0' ? { key, target: 'Version', result: 'Equal', version: '0' } : { key, target: 'Mod', result: 'Equal', mod_revision: r.globalMods[k]! };
  });
}

/** The record, with the wave revision a CLI that died right after the wave's txn did not get to write (that txn also wrote the record). */
export async function load(client: Etcd3, ks: Keyspace, id: string): Promise<Loaded> {
  const l = await loadRollout(client, ks, id);
  const w = l.rollout.waves[l.rollout.current];
  if (w && w.phase === 'applying' && w.revision === undefined) w.revision = Number(l.mod);
  if ((l.rollout.state === 'promoted' || l.rollout.state === 'aborted') && l.rollout.finalRevision === undefined) l.rollout.finalRevision = Number(l.mod);
  return l;
}

export const clone = (r: Rollout): Rollout => JSON.parse(JSON.stringify(r)) as Rollout;

/** Overrides of `clusters` (puts or deletes) as txn operations. */
export function overrideOps(ks: Keyspace, r: Rollout, clusters: string[], put: boolean): IRequestOp[] {
  return clusters.flatMap((c) =>
    r.keys.map((k): IRequestOp => {
      const key = Buffer.from(ks.dataKey(clusterScope(c), r.ref, k));
      return put ? { request_put: { key, value: valueFor(r, k, c) } } : { request_delete_range: { key } };
    }),
  );
}

/** The clusters whose overrides a rollout may have written: every wave begun. */
export function begunClusters(r: Rollout): string[] {
  return r.waves.filter((w, i) => i < r.current || w.phase !== 'pending').flatMap((w) => w.clusters);
}

