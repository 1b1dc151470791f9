/**
 * Making a rollout at `rollout start`: the waves from `--waves`, the clusters they
 * cover (known from recipients/ and status/, narrowed by the object's placement),
 * and the record (./rollout-record.ts) with the values — for secrets, sealed here
 * once per wave cluster and once for the global key, then the plaintext zeroed.
 */
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { parseMeta, placementAdmits } from '../desired/meta.js';
import { claimedVersion, seal } from '../envelope/envelope.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { matchesGlob, MAX_GLOB_LENGTH } from '../glob.js';
import { clusterError, clusterScope, GLOBAL, isSealed, logicalPath, META_KEY, objectId, printable, type Keyspace, type ObjectRef } from '../keyspace.js';
import { MAX_TXN_OPS } from './rollback.js';
import { alreadyRunning, type Rollout } from './rollout-record.js';

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
