/**
 * A staged rollout's plan and state: the record kept at `PREFIX/rollouts/<id>`
 * (JSON), how it is made at `rollout start`, and the guarded read/write every step
 * goes through. The steps themselves are in ./rollout.ts.
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
 * driving one rollout cannot both advance it; the loser stops and says so.
 */
import { randomBytes } from 'node:crypto';
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import { claimedVersion, seal } from '../envelope/envelope.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { OperationFailed, UserError } from '../errors.js';
import { matchesGlob, MAX_GLOB_LENGTH } from '../glob.js';
import { parseMeta, placementAdmits } from '../desired/meta.js';
import { clusterError, clusterScope, GLOBAL, isSealed, logicalPath, META_KEY, objectId, printable, type Keyspace, type ObjectRef } from '../keyspace.js';
import { rawClients } from './history.js';
import { MAX_TXN_OPS } from './rollback.js';

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

/** `canary=east-1;eu=eu-*,west-eu;rest=*` → waves (names and globs, clusters still empty). */
export function parseWaves(text: string): { name: string; globs: string[] }[] {
  const waves = text.split(';').map((w) => w.trim()).filter(Boolean).map((w, i) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new UserError(`--waves: wave ${i + 1} "${printable(w)}": expected NAME=GLOB[,GLOB…]`);
    const name = w.slice(0, eq).trim();
    if (clusterError(name)) throw new UserError(`--waves: wave name "${printable(name)}" must be a DNS-1123 label (a-z, 0-9, -)`);
    const globs = w.slice(eq + 1).split(',').map((g) => g.trim()).filter(Boolean);
    if (globs.length === 0 || globs.some((g) => g.length > MAX_GLOB_LENGTH)) throw new UserError(`--waves: wave "${name}": give one or more cluster globs (at most ${MAX_GLOB_LENGTH} characters each)`);
    return { name, globs };
  });
  if (waves.length === 0) throw new UserError('--waves: give at least one wave, e.g. --waves "canary=east-1;rest=*"');
  const names = new Set<string>();
  for (const w of waves) {
    if (names.has(w.name)) throw new UserError(`--waves: wave "${w.name}" is named twice`);
    names.add(w.name);
  }
  return waves;
}

/** Clusters the fleet knows: registered under recipients/ or reporting under status/. */
export async function knownClusters(client: Etcd3, ks: Keyspace): Promise<string[]> {
  const found = new Set<string>();
  for (const prefix of [ks.recipientsPrefix(), ks.statusPrefix()]) {
    const keys = await client.getAll().prefix(prefix).keys();
    for (const k of keys) {
      const cluster = k.slice(prefix.length).split('/')[0]!;
      if (!clusterError(cluster)) found.add(cluster);
    }
  }
  return [...found].sort();
}

/**
 * The clusters where the object exists, by its global `@meta` placement: an override
 * under clusters/<c>/ would create the object on a cluster the placement leaves out
 * (cluster keys name it explicitly), so those clusters are left out of the waves; they
 * do not get the object at promotion either. A clusterSelector matches labels from
 * each daemon's own config, which the CLI cannot see: refused. A broken @meta too.
 */
export async function placedClusters(client: Etcd3, ks: Keyspace, ref: ObjectRef, clusters: string[]): Promise<{ placed: string[]; excluded: string[] }> {
  const meta = await client.get(ks.dataKey(GLOBAL, ref, META_KEY)).buffer();
  if (meta === null) return { placed: clusters, excluded: [] };
  const where = `global/${objectId(ref.kind, ref.namespace, ref.name)}/${META_KEY}`;
  const parsed = parseMeta(meta);
  if ('error' in parsed) throw new UserError(`${where}: ${parsed.error}; daemons keep this object's last good state: fix it before a rollout`);
  const p = parsed.meta.placement;
  if (p?.clusterSelector) throw new UserError(`${where}: placement.clusterSelector matches labels in each daemon's config, which the CLI cannot see: a rollout could create the object where it is not placed; not supported (use placement.clusters)`);
  const admits = (c: string) => placementAdmits(parsed.meta, c, {});
  return { placed: clusters.filter(admits), excluded: clusters.filter((c) => !admits(c)) };
}

/** Each cluster goes to the first wave with a glob that matches it; an empty wave is refused. Returns the clusters in no wave. */
export function assignClusters(waves: { name: string; globs: string[] }[], clusters: string[]): { waves: { name: string; globs: string[]; clusters: string[] }[]; unassigned: string[] } {
  const out = waves.map((w) => ({ ...w, clusters: [] as string[] }));
  const unassigned: string[] = [];
  for (const c of clusters) {
    const wave = out.find((w) => w.globs.some((g) => matchesGlob(c, g)));
    if (wave) wave.clusters.push(c);
    else unassigned.push(c);
  }
  const empty = out.find((w) => w.clusters.length === 0);
  if (empty) {
    throw new UserError(`--waves: wave "${empty.name}" (${empty.globs.map(printable).join(', ')}) matches no cluster left by the waves before it; known clusters: ${clusters.join(', ') || 'none (nothing under recipients/ or status/)'}`);
  }
  return { waves: out, unassigned };
}

export function newRolloutId(now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${t}-${randomBytes(2).toString('hex')}`;
}

export interface StartInput {
  ref: ObjectRef;
  /** key → new bytes (zeroed here for secrets once sealed). */
  values: Map<string, Buffer>;
  waves: { name: string; globs: string[]; clusters: string[] }[];
  options: Rollout['options'];
  /** Secrets: the pinned recipients (global and per cluster). */
  pinned?: RecipientsFile;
}

/**
 * Reads what the rollout must not clobber and builds its record:
 *  (0) a rollout already running on the object is refused;
 *  (1) each global key's mod revision (0: absent), kept as the conflict guard;
 *  (2) refuses a key some wave cluster already overrides: that cluster's own value
 *      would be replaced during the rollout and deleted at promotion;
 *  (3) secrets: seals each value once per wave cluster (bound to clusters/<c>/…, to
 *      c + admins) and once for the global key (to every pinned recipient, a version
 *      above the current global envelope's), then zeroes the plaintext;
 *  (4) refuses a rollout whose promotion would exceed etcd's operations per txn.
 */
export async function planRollout(client: Etcd3, ks: Keyspace, input: StartInput): Promise<Rollout> {
  const { ref, values } = input;
  const keys = [...values.keys()].sort();
  const clusters = input.waves.flatMap((w) => w.clusters);
  // (4) promotion: a put per key, a delete per key per cluster, the record, the lock.
  const promoteOps = keys.length * (1 + clusters.length) + 2;
  if (promoteOps > MAX_TXN_OPS) throw new UserError(`${keys.length} key(s) over ${clusters.length} cluster(s) need ${promoteOps} operations in the promotion transaction; etcd allows ${MAX_TXN_OPS}: split the rollout`);
  // (0) The lock is taken only by createRollout's txn; this early read gives the same refusal before (2) could give a confusing one.
  const active = await client.get(ks.rolloutLockKey(ref)).string();
  if (active !== null) throw alreadyRunning(ref, active);
  // (1)
  const globalMods: Record<string, string> = {};
  const currentGlobal = new Map<string, Buffer>();
  for (const key of keys) {
    const res = await client.get(ks.dataKey(GLOBAL, ref, key)).exec();
    const kv = res.kvs[0];
    globalMods[key] = kv ? kv.mod_revision : '0';
    if (kv) currentGlobal.set(key, kv.value);
  }
  // (2)
  for (const c of clusters) {
    for (const key of keys) {
      const k = ks.dataKey(clusterScope(c), ref, key);
      if ((await client.get(k).exec()).kvs.length > 0) {
        throw new UserError(`${printable(ks.relative(k))} already exists: cluster ${c} has its own value, which a rollout would replace and promotion delete; remove it (config/secret rm -c ${c}) or leave ${c} out of --waves`);
      }
    }
  }
  const now = new Date().toISOString();
  const rollout: Rollout = {
    id: newRolloutId(),
    ref,
    keys,
    globalMods,
    waves: input.waves.map((w) => ({ ...w, phase: 'pending' })),
    current: 0,
    state: 'running',
    options: input.options,
    createdAt: now,
    updatedAt: now,
  };
  if (!isSealed(ref.kind)) {
    rollout.values = Object.fromEntries(keys.map((k) => [k, values.get(k)!.toString('base64')]));
    return rollout;
  }
  // (3)
  const pinned = input.pinned;
  if (!pinned) throw new UserError('--secret needs the pinned recipients (--recipients-file)');
  const sealed: NonNullable<Rollout['sealed']> = { global: {}, clusters: {} };
  try {
    for (const key of keys) {
      const plain = values.get(key)!;
      const old = currentGlobal.get(key);
      sealed.global[key] = await seal(plain, logicalPath(GLOBAL, ref, key), pinned.forScope(GLOBAL), undefined, { after: old ? claimedVersion(old) ?? 0 : 0 });
      for (const c of clusters) {
        (sealed.clusters[c] ??= {})[key] = await seal(plain, logicalPath(clusterScope(c), ref, key), pinned.forScope(clusterScope(c)));
      }
    }
  } finally {
    for (const v of values.values()) v.fill(0);
  }
  rollout.sealed = sealed;
  return rollout;
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
  let r: Rollout;
  try {
    r = JSON.parse(text) as Rollout;
  } catch {
    throw new OperationFailed(`rollouts/${printable(id)}: not a rollout record (not JSON)`);
  }
  const ok = r && typeof r === 'object' && r.id === id && Array.isArray(r.waves) && Array.isArray(r.keys) && typeof r.current === 'number' && r.ref && typeof r.ref === 'object' && typeof r.state === 'string' && r.options && typeof r.options === 'object';
  if (!ok) throw new OperationFailed(`rollouts/${printable(id)}: not a rollout record (fields missing)`);
  return r;
}

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
