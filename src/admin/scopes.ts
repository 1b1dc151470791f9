/**
 * `config get --merged --cluster C` and `config ls`'s scopes: what one cluster gets,
 * computed by the daemon's own layering (desired/store.ts groups the keys a cluster
 * can see, desired/build.ts picks each key's winner and applies placement), never by
 * a second copy of those rules.
 */
import type { Etcd3 } from 'etcd3';
import { buildObject } from '../desired/build.js';
import { KeyStore } from '../desired/store.js';
import { clusterScope, GLOBAL, objectId, scopePath, type Keyspace, type ObjectRef } from '../keyspace.js';
import type { Kv } from '../source/types.js';

export type Merged =
  /** The value cluster C gets for this key, and the scope (`global` or `clusters/C`) it came from. */
  | { type: 'value'; value: Buffer; scope: string; path: string; revision: number; overrides?: string }
  /** C gets no such key; `why` says so in words (no keys, placement, or @meta broken). */
  | { type: 'none'; why: string };

/** Every key (data and @meta) of one object in global and clusters/C, as the source hands them to a daemon. */
async function objectKvs(client: Etcd3, ks: Keyspace, ref: ObjectRef, cluster: string): Promise<Kv[]> {
  const kvs: Kv[] = [];
  for (const scope of [GLOBAL, clusterScope(cluster)]) {
    const res = await client.getAll().prefix(ks.kindPrefix(scope, ref.kind, ref.namespace, ref.name)).exec();
    for (const kv of res.kvs) kvs.push({ key: kv.key.toString(), value: kv.value, modRevision: Number(kv.mod_revision) });
  }
  return kvs;
}

/**
 * The value of `key` in object `ref` as cluster `cluster` (with `labels`, for
 * placement selectors) gets it. Config only: secrets are not opened here.
 */
export async function mergedValue(client: Etcd3, ks: Keyspace, ref: ObjectRef, key: string, cluster: string, labels: Record<string, string>): Promise<Merged> {
  const store = new KeyStore(`${ks.prefix}/`, cluster);
  store.reset(await objectKvs(client, ks, ref, cluster));
  const keys = store.objects.get(objectId(ref.kind, ref.namespace, ref.name));
  if (!keys) return { type: 'none', why: `no keys of ${ref.namespace}/${ref.name} in global or ${scopePath(clusterScope(cluster))}` };
  const built = buildObject(keys, { cluster, labels, secret: () => ({ error: 'secrets are not opened here' }), unopened: 'skip' });
  if (built.type === 'hold') {
    const p = built.problems[0];
    return { type: 'none', why: `the daemon keeps the last good state of this object: ${p ? `${p.path}: ${p.reason}` : 'it cannot be built'}` };
  }
  const value = built.type === 'object' ? built.object.data.get(key) : undefined;
  if (value === undefined) {
    const placedOut = keys.global.has(key) && !keys.cluster.has(key);
    return { type: 'none', why: placedOut ? `global has ${key} but its @meta placement does not admit cluster ${cluster}` : `no key ${key} in global or ${scopePath(clusterScope(cluster))}` };
  }
  // The winner rule of buildObject: a key under clusters/C beats the global one.
  const fromCluster = keys.cluster.get(key);
  const stored = fromCluster ?? keys.global.get(key)!;
  const scope = fromCluster ? scopePath(clusterScope(cluster)) : 'global';
  return { type: 'value', value, scope, path: stored.path, revision: stored.modRevision, overrides: fromCluster && keys.global.has(key) ? keys.global.get(key)!.path : undefined };
}

export interface ScopedEntry {
  /** `global` or `clusters/<c>`. */
  scope: string;
  /** `<ns>/<name>/<key>` (`@meta` for an object's metadata); for an invalid key, its path after the kind. */
  ref: string;
  bytes: number;
  revision: number;
  /** Listing with a cluster: this cluster key replaces a global one (`override`), or this global key is replaced there (`overridden`). */
  mark?: 'override' | 'overridden';
  /** Why daemons skip this key (not a valid name). */
  invalid?: string;
}

/**
 * Config keys under global and the cluster scopes, each with its scope: every
 * `clusters/*` scope, or with `cluster` only that one, with overrides marked
 * (the same key of the same object in both). `namespace`/`name` narrow the list.
 */
export async function listScoped(client: Etcd3, ks: Keyspace, kind: ObjectRef['kind'], where: { namespace?: string; name?: string }, cluster?: string): Promise<ScopedEntry[]> {
  const prefixes = [ks.kindPrefix(GLOBAL, kind, where.namespace, where.name), cluster ? ks.kindPrefix(clusterScope(cluster), kind, where.namespace, where.name) : ks.key('clusters/')];
  const under = (where.namespace === undefined ? '' : `${where.namespace}/`) + (where.name === undefined ? '' : `${where.name}/`);
  const entries: ScopedEntry[] = [];
  for (const prefix of prefixes) {
    const res = await client.getAll().prefix(prefix).exec();
    for (const kv of res.kvs) {
      const rel = ks.relative(kv.key.toString());
      const parsed = ks.parse(kv.key.toString());
      const common = { bytes: kv.value.length, revision: Number(kv.mod_revision) };
      if (parsed.type === 'data' || parsed.type === 'meta') {
        if (parsed.kind !== kind || !`${parsed.namespace}/${parsed.name}/`.startsWith(under)) continue;
        entries.push({ scope: scopePath(parsed.scope), ref: `${parsed.namespace}/${parsed.name}/${parsed.type === 'data' ? parsed.key : '@meta'}`, ...common });
      } else if (parsed.type === 'invalid') {
        // Shown under the scope and kind its path starts with, so a bad name is visible where it was meant to go.
        const segs = rel.split('/');
        const scopeLen = segs[0] === 'clusters' ? 2 : 1;
        if (segs[scopeLen] !== kind || !segs.slice(scopeLen + 1).join('/').startsWith(under)) continue;
        entries.push({ scope: segs.slice(0, scopeLen).join('/'), ref: segs.slice(scopeLen + 1).join('/'), ...common, invalid: parsed.reason });
      }
    }
  }
  if (cluster) {
    const own = scopePath(clusterScope(cluster));
    const inCluster = new Set(entries.filter((e) => e.scope === own && !e.invalid).map((e) => e.ref));
    const inGlobal = new Set(entries.filter((e) => e.scope === 'global' && !e.invalid).map((e) => e.ref));
    for (const e of entries) {
      if (e.invalid || e.ref.endsWith('/@meta')) continue;
      if (e.scope === own && inGlobal.has(e.ref)) e.mark = 'override';
      else if (e.scope === 'global' && inCluster.has(e.ref)) e.mark = 'overridden';
    }
  }
  return entries;
}
