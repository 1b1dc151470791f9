import { parseKey, printable } from '../source/keys.js';
import type { Change, Kv } from '../source/types.js';
import type { ObjectKeys, Problem } from './build.js';
import { objectId, type ObjectId } from './types.js';

/**
 * The keys this cluster can see, grouped by object. Fed by the source's
 * snapshots and changes; says which objects each update touched. Other
 * clusters' scopes are dropped on the way in — never read into our output.
 */
export class KeyStore {
  readonly objects = new Map<ObjectId, ObjectKeys>();
  revision = 0;

  /** `prefix` ends with "/", e.g. "/confsync/". */
  constructor(
    private readonly prefix: string,
    private readonly cluster: string,
  ) {}

  /** Replace the whole view with a snapshot. Dirty = every object before or after. */
  reset(kvs: Kv[], revision: number): { dirty: Set<ObjectId>; invalid: Problem[] } {
    const dirty = new Set(this.objects.keys());
    this.objects.clear();
    const invalid: Problem[] = [];
    for (const kv of kvs) this.put(kv, dirty, invalid);
    this.revision = revision;
    return { dirty, invalid };
  }

  apply(changes: Change[], revision: number): { dirty: Set<ObjectId>; invalid: Problem[] } {
    const dirty = new Set<ObjectId>();
    const invalid: Problem[] = [];
    for (const c of changes) {
      if (c.type === 'put') this.put(c.kv, dirty, invalid);
      else this.delete(c.key, dirty);
    }
    this.revision = revision;
    return { dirty, invalid };
  }

  private put(kv: Kv, dirty: Set<ObjectId>, invalid: Problem[]): void {
    const rest = this.relative(kv.key);
    const parsed = parseKey(rest);
    if (parsed.type === 'invalid') return void invalid.push({ path: printable(rest), reason: parsed.reason });
    if (parsed.type !== 'data' && parsed.type !== 'meta') return; // recipients/, status/: not object data
    if (parsed.scope.type === 'cluster' && parsed.scope.cluster !== this.cluster) return;
    const id = objectId(parsed.kind, parsed.namespace, parsed.name);
    let obj = this.objects.get(id);
    if (!obj) {
      obj = { kind: parsed.kind, namespace: parsed.namespace, name: parsed.name, global: new Map(), cluster: new Map() };
      this.objects.set(id, obj);
    }
    const isGlobal = parsed.scope.type === 'global';
    if (parsed.type === 'meta') {
      if (isGlobal) obj.globalMeta = kv;
      else obj.clusterMeta = kv;
    } else {
      (isGlobal ? obj.global : obj.cluster).set(parsed.key, kv);
    }
    dirty.add(id);
  }

  private delete(key: string, dirty: Set<ObjectId>): void {
    const parsed = parseKey(this.relative(key));
    if (parsed.type !== 'data' && parsed.type !== 'meta') return;
    if (parsed.scope.type === 'cluster' && parsed.scope.cluster !== this.cluster) return;
    const id = objectId(parsed.kind, parsed.namespace, parsed.name);
    const obj = this.objects.get(id);
    if (!obj) return;
    const isGlobal = parsed.scope.type === 'global';
    if (parsed.type === 'meta') {
      if (isGlobal) obj.globalMeta = undefined;
      else obj.clusterMeta = undefined;
    } else {
      (isGlobal ? obj.global : obj.cluster).delete(parsed.key);
    }
    if (!obj.global.size && !obj.cluster.size && !obj.globalMeta && !obj.clusterMeta) this.objects.delete(id);
    dirty.add(id);
  }

  private relative(key: string): string {
    return key.startsWith(this.prefix) ? key.slice(this.prefix.length) : key;
  }
}
