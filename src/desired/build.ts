import { createHash } from 'node:crypto';
import { isSealed, objectId, type ObjectKind } from '../keyspace.js';
import type { Kv } from '../source/types.js';
import type { DesiredObject } from './types.js';
import { parseMeta, placementAdmits, type Meta } from './meta.js';
import { overLimits, type BuildLimits, type Problem } from './validate.js';

export { overLimits, type BuildLimits, type Problem } from './validate.js';

/** A key as etcd holds it, with its logical path (`<scope>/<kind>/<ns>/<name>/<key>`). */
export type StoredKv = Kv & { path: string };

/** Every key in etcd that can contribute to one object on this cluster. */
export interface ObjectKeys {
  kind: ObjectKind;
  namespace: string;
  name: string;
  global: Map<string, StoredKv>;
  cluster: Map<string, StoredKv>;
  globalMeta?: StoredKv;
  clusterMeta?: StoredKv;
}

export interface BuildContext {
  cluster: string;
  labels: Record<string, string>;
  /**
   * The plaintext of a secret value, or why it cannot be opened. Secrets are
   * opened ahead of time by the caller (libsodium is async to load), so this
   * core stays a pure function of its inputs.
   */
  secret: (kv: StoredKv) => Buffer | { error: string };
  /**
   * A secret that does not open and has no last good value: `skip` leaves that key
   * out (the rest of the object goes live); `hold` keeps the whole object as it is
   * in the sinks — used while the sinks may still hold a last good value that this
   * process never saw (the first sync after a restart).
   */
  unopened?: 'skip' | 'hold';
  limits?: BuildLimits;
}

export type BuildResult =
  /** The object as it should be on this cluster. */
  | { type: 'object'; object: DesiredObject; problems: Problem[] }
  /** It does not exist on this cluster (no keys, or placement excludes it): prune it. */
  | { type: 'absent'; problems: Problem[] }
  /** It cannot be built right now (bad @meta, a secret that won't open): keep the last good state. */
  | { type: 'hold'; problems: Problem[] };

/**
 * Build one object for this cluster — pure: same inputs, same output.
 *  - global keys first, then `clusters/<me>` keys: the cluster value wins, key by key;
 *  - a global object whose placement excludes us contributes nothing (keys or @meta);
 *    keys under `clusters/<me>` always apply (they name us explicitly);
 *  - labels/annotations: global @meta, then cluster @meta on top; type and
 *    immutable: the cluster's when set;
 *  - a secret that does not open keeps its previous value when there is one;
 *    without one it is left out (or holds the object, see `unopened`); the other
 *    keys go live either way. It never falls back to the global value its
 *    override was meant to replace.
 */
export function buildObject(keys: ObjectKeys, ctx: BuildContext, previous?: DesiredObject): BuildResult {
  const problems: Problem[] = [];
  const metas: (Meta | undefined)[] = [];
  for (const kv of [keys.globalMeta, keys.clusterMeta]) {
    if (!kv) {
      metas.push(undefined);
      continue;
    }
    const parsed = parseMeta(kv.value);
    if ('error' in parsed) {
      problems.push({ path: kv.path, reason: parsed.error });
      return { type: 'hold', problems };
    }
    metas.push(parsed.meta);
  }
  const globalPlaced = placementAdmits(metas[0], ctx.cluster, ctx.labels);
  // An excluded global object contributes nothing here: not its keys, not its @meta.
  const globalMeta = globalPlaced ? metas[0] : undefined;
  const clusterMeta = metas[1];

  // Pick each key's winning value first (the cluster's beats the global one), so
  // a global secret sealed only to other clusters never blocks our own override.
  const winners = new Map<string, StoredKv>();
  if (globalPlaced) for (const [key, kv] of keys.global) winners.set(key, kv);
  for (const [key, kv] of keys.cluster) winners.set(key, kv);
  const over = overLimits(winners, ctx.limits);
  if (over) {
    problems.push({ path: `${keys.kind}/${keys.namespace}/${keys.name}`, reason: over });
    return { type: 'hold', problems };
  }

  const data = new Map<string, Buffer>();
  let revision = Math.max(globalPlaced ? (keys.globalMeta?.modRevision ?? 0) : 0, keys.clusterMeta?.modRevision ?? 0);
  let held = false;
  for (const [key, kv] of winners) {
    revision = Math.max(revision, kv.modRevision);
    if (!isSealed(keys.kind)) {
      data.set(key, kv.value);
      continue;
    }
    const opened = ctx.secret(kv);
    if (Buffer.isBuffer(opened)) {
      data.set(key, opened);
      continue;
    }
    problems.push({ path: kv.path, reason: opened.error, unopened: true });
    const last = previous?.data.get(key);
    if (last) data.set(key, last);
    else if (ctx.unopened === 'hold') held = true;
  }
  // Keys that exist but none opened: there is nothing good to show, and "absent"
  // would delete whatever a sink still holds.
  if (held || (data.size === 0 && winners.size > 0)) return { type: 'hold', problems };
  if (data.size === 0) return { type: 'absent', problems };

  const labels = merged(globalMeta?.labels, clusterMeta?.labels);
  const annotations = merged(globalMeta?.annotations, clusterMeta?.annotations);
  const type = clusterMeta?.type ?? globalMeta?.type;
  const immutable = clusterMeta?.immutable ?? globalMeta?.immutable;
  const object: DesiredObject = {
    id: objectId(keys.kind, keys.namespace, keys.name),
    kind: keys.kind,
    namespace: keys.namespace,
    name: keys.name,
    data,
    labels,
    annotations,
    type,
    immutable,
    revision,
    hash: hashObject(data, { labels, annotations, type, immutable }),
  };
  return { type: 'object', object, problems };
}

/** Nothing set: one frozen empty record shared by every object without labels (or annotations), not one each. */
const NONE: Record<string, string> = Object.freeze({}) as Record<string, string>;

function merged(under: Record<string, string> | undefined, over: Record<string, string> | undefined): Record<string, string> {
  if (!under && !over) return NONE;
  return { ...under, ...over };
}

/** sha256 over sorted keys and values (length-prefixed, so no two payloads collide) and metadata. */
export function hashObject(
  data: Map<string, Buffer>,
  meta: { labels: Record<string, string>; annotations: Record<string, string>; type?: string; immutable?: boolean },
): string {
  const h = createHash('sha256');
  const sorted = (r: Record<string, string>) => Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  h.update(JSON.stringify([sorted(meta.labels), sorted(meta.annotations), meta.type ?? null, meta.immutable ?? null]));
  for (const key of [...data.keys()].sort()) {
    const v = data.get(key)!;
    h.update(`\n${key.length}:${key}:${v.length}:`);
    h.update(v);
  }
  return h.digest('hex');
}
