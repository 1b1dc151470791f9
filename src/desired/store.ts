import { parseKey, printable, type ObjectId, objectId, type ParsedKey } from '../keyspace.js';
import type { Change, Kv } from '../source/types.js';
import type { ObjectKeys, Problem, StoredKv } from './build.js';

/**
 * One key as the store holds it. A class, not `{ ...kv, path }`: a spread gave
 * every one of 110,000 keys a hidden class of its own (~190 B) and its path
 * out of line; here all share one shape. `path` (the key without the prefix) is
 * sliced when asked — by a failed build and a secret's open, not per key held:
 * ~3.4 MiB and a field less at 110,000 keys. One class per store: its prefix.
 */
type StoredClass = new (key: string, value: Buffer, modRevision: number) => StoredKv;

function storedClass(prefix: string): StoredClass {
  return class Stored implements StoredKv {
    constructor(
      readonly key: string,
      readonly value: Buffer,
      readonly modRevision: number,
    ) {}

    get path(): string {
      return relativeTo(prefix, this.key);
    }
  };
}

/**
 * The keys this cluster can see, grouped by object, each with its logical path
 * (so nobody rebuilds it). Fed by the source's snapshots and changes; says which
 * objects each update touched. Other clusters' scopes are dropped on the way in —
 * never read into our output.
 */
export class KeyStore {
  readonly objects = new Map<ObjectId, ObjectKeys>();
  /** `<scope>/templates/<name>` keys by name (render/ reads them); not objects, never in a sink. */
  private readonly templates = new Map<string, { global?: StoredKv; cluster?: StoredKv }>();
  private templateChanges = 0;
  private readonly Stored: StoredClass;

  /** `prefix` ends with "/", e.g. "/confsync/". */
  constructor(
    private readonly prefix: string,
    private readonly cluster: string,
  ) {
    this.Stored = storedClass(prefix);
  }

  /** Replace the whole view with a snapshot. Dirty = every object before or after. */
  reset(kvs: Kv[]): { dirty: Set<ObjectId>; invalid: Problem[] } {
    const dirty = new Set(this.objects.keys());
    this.objects.clear();
    this.templates.clear();
    const invalid: Problem[] = [];
    for (const kv of kvs) this.put(kv, dirty, invalid);
    return { dirty, invalid };
  }

  /** `removed`: objects whose last key went in this batch, with the revision of that delete. */
  /** `templates`: the batch put or deleted a template key (no object is dirty for that). */
  apply(changes: Change[]): { dirty: Set<ObjectId>; invalid: Problem[]; removed: Map<ObjectId, number>; templates: boolean } {
    const templatesBefore = this.templateChanges;
    const dirty = new Set<ObjectId>();
    const invalid: Problem[] = [];
    const removed = new Map<ObjectId, number>();
    for (const c of changes) {
      if (c.type === 'put') this.put(c.kv, dirty, invalid);
      else {
        const emptied = this.delete(c.key, dirty);
        if (emptied) removed.set(emptied, c.modRevision);
      }
    }
    for (const id of removed.keys()) if (this.objects.has(id)) removed.delete(id); // came back later in the batch
    return { dirty, invalid, removed, templates: this.templateChanges !== templatesBefore };
  }

  /**
   * What `apply(changes)` would make of the objects they touch, changing nothing:
   * per object its keys afterwards (copies), or undefined when its last key would
   * go. Templates and invalid keys are left out.
   */
  preview(changes: Change[]): Map<ObjectId, ObjectKeys | undefined> {
    const out = new Map<ObjectId, ObjectKeys | undefined>();
    for (const c of changes) {
      const key = c.type === 'put' ? c.kv.key : c.key;
      const parsed = parseKey(this.relative(key));
      if (parsed.type !== 'data' && parsed.type !== 'meta') continue;
      if (parsed.scope.type === 'cluster' && parsed.scope.cluster !== this.cluster) continue;
      const id = objectId(parsed.kind, parsed.namespace, parsed.name);
      const isGlobal = parsed.scope.type === 'global';
      let obj = out.has(id) ? out.get(id) : copyKeys(this.objects.get(id));
      if (c.type === 'put') {
        obj ??= { kind: parsed.kind, namespace: parsed.namespace, name: parsed.name, global: new Map(), cluster: new Map() };
        const stored = new this.Stored(c.kv.key, c.kv.value, c.kv.modRevision);
        if (parsed.type === 'meta') obj[isGlobal ? 'globalMeta' : 'clusterMeta'] = stored;
        else (isGlobal ? obj.global : obj.cluster).set(parsed.key, stored);
      } else if (obj) {
        if (parsed.type === 'meta') obj[isGlobal ? 'globalMeta' : 'clusterMeta'] = undefined;
        else (isGlobal ? obj.global : obj.cluster).delete(parsed.key);
        if (!(obj.global.size || obj.cluster.size || obj.globalMeta || obj.clusterMeta)) obj = undefined;
      }
      out.set(id, obj);
    }
    return out;
  }

  /** The template stored under `<scope>/templates/<name>` as this cluster sees it: its own scope's wins over global. */
  template(name: string): StoredKv | undefined {
    const t = this.templates.get(name);
    return t?.cluster ?? t?.global;
  }

  /** A template key put (`kv`) or deleted: kept by name and scope. */
  private noteTemplate(parsed: Extract<ParsedKey, { type: 'template' }>, kv: Kv | undefined): void {
    if (parsed.scope.type === 'cluster' && parsed.scope.cluster !== this.cluster) return;
    this.templateChanges++;
    const layer = parsed.scope.type === 'global' ? 'global' : 'cluster';
    const t = this.templates.get(parsed.name) ?? {};
    t[layer] = kv && new this.Stored(kv.key, kv.value, kv.modRevision);
    if (t.global || t.cluster) this.templates.set(parsed.name, t);
    else this.templates.delete(parsed.name);
  }

  /** The object's layer a key belongs to, or undefined when it is not ours to see. */
  private locate(key: string, invalid?: Problem[], put?: Kv) {
    const rest = this.relative(key);
    const parsed = parseKey(rest);
    if (parsed.type === 'invalid') return void invalid?.push({ path: printable(rest), reason: parsed.reason });
    if (parsed.type === 'template') return this.noteTemplate(parsed, put);
    if (parsed.type !== 'data' && parsed.type !== 'meta') return undefined; // recipients/, status/: not object data
    if (parsed.scope.type === 'cluster' && parsed.scope.cluster !== this.cluster) return undefined;
    return { parsed, id: objectId(parsed.kind, parsed.namespace, parsed.name), isGlobal: parsed.scope.type === 'global' };
  }

  private put(kv: Kv, dirty: Set<ObjectId>, invalid: Problem[]): void {
    const at = this.locate(kv.key, invalid, kv);
    if (!at) return;
    const { parsed, id, isGlobal } = at;
    let obj = this.objects.get(id);
    if (!obj) {
      obj = { kind: parsed.kind, namespace: parsed.namespace, name: parsed.name, global: NO_KEYS, cluster: NO_KEYS };
      this.objects.set(id, obj);
    }
    const stored = new this.Stored(kv.key, kv.value, kv.modRevision);
    if (parsed.type === 'meta') {
      if (isGlobal) obj.globalMeta = stored;
      else obj.clusterMeta = stored;
    } else {
      writable(obj, isGlobal).set(parsed.key, stored);
    }
    dirty.add(id);
  }

  /** Returns the object's id when this delete removed its last key. */
  private delete(key: string, dirty: Set<ObjectId>): ObjectId | undefined {
    const at = this.locate(key);
    if (!at) return undefined;
    const { parsed, id, isGlobal } = at;
    const obj = this.objects.get(id);
    if (!obj) return undefined;
    if (parsed.type === 'meta') {
      if (isGlobal) obj.globalMeta = undefined;
      else obj.clusterMeta = undefined;
    } else {
      const layer = isGlobal ? 'global' : 'cluster';
      obj[layer].delete(parsed.key);
      if (obj[layer].size === 0) obj[layer] = NO_KEYS;
    }
    dirty.add(id);
    if (obj.global.size || obj.cluster.size || obj.globalMeta || obj.clusterMeta) return undefined;
    this.objects.delete(id);
    return id;
  }

  private relative(key: string): string {
    return relativeTo(this.prefix, key);
  }
}

/** The key without the prefix: a logical path (parseKey's input, a Stored key's `path`). */
function relativeTo(prefix: string, key: string): string {
  return key.startsWith(prefix) ? key.slice(prefix.length) : key;
}

/**
 * A layer an object has no key in (most objects have no override under
 * clusters/<me>): one shared empty map, not a map per object (~3.5 MiB at 20,000
 * objects). Never written: `writable` puts a map of the object's own in its place first.
 */
class NoKeys extends Map<string, StoredKv> {
  override set(): this {
    throw new Error('internal: the shared empty layer was written to');
  }
}
const NO_KEYS: Map<string, StoredKv> = new NoKeys();

function writable(obj: ObjectKeys, isGlobal: boolean): Map<string, StoredKv> {
  const layer = isGlobal ? 'global' : 'cluster';
  if (obj[layer] === NO_KEYS) obj[layer] = new Map();
  return obj[layer];
}

function copyKeys(o: ObjectKeys | undefined): ObjectKeys | undefined {
  return o && { ...o, global: new Map(o.global), cluster: new Map(o.cluster) };
}
