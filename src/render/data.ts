import { Drop } from 'liquidjs';
import type { DesiredObject } from '../desired/types.js';
import { matchesGlob } from '../glob.js';
import type { ObjectId, ObjectKind } from '../keyspace.js';

/**
 * The data a template sees (render/template.ts renders it): `configmaps` and
 * `secrets` map "<namespace>/<name>" to `{ ref, namespace, name, keys: {<key>:
 * text}, labels, annotations }`, the object as this cluster sees it (overrides and
 * placement applied). Both maps are drops: an object is turned into a view only
 * when the template reads it, and every read is recorded (`Deps`), so a template
 * re-renders only when something it read changed.
 */

/** What a template may see of secrets: the values, none (reading them is an error), or placeholders (`template render` without --show-secrets). */
export type SecretsAccess = 'allow' | 'deny' | 'mask';

export const MASK = '********';

/** Distinct `match` globs a render records; past this, the whole kind counts as read (each change is tested against every glob). */
const MAX_GLOBS = 256;

/** What one render read: it renders again when one of these objects changes. */
export class Deps {
  readonly ids = new Set<ObjectId>();
  readonly globs: { kind: ObjectKind; glob: string }[] = [];
  /** Kinds iterated whole (`for pair in configmaps`), or matched with too many globs. */
  readonly kinds = new Set<ObjectKind>();
  private readonly seen = new Set<string>();

  addGlob(kind: ObjectKind, glob: string): void {
    const key = `${kind}/${glob}`;
    if (this.seen.has(key) || this.kinds.has(kind)) return;
    if (this.seen.size >= MAX_GLOBS) return void this.kinds.add(kind);
    this.seen.add(key);
    this.globs.push({ kind, glob });
  }

  touches(id: ObjectId): boolean {
    if (this.ids.has(id)) return true;
    const slash = id.indexOf('/');
    const kind = id.slice(0, slash) as ObjectKind;
    if (this.kinds.has(kind)) return true;
    const ref = id.slice(slash + 1);
    return this.globs.some((g) => g.kind === kind && matchesGlob(ref, g.glob));
  }
}

export interface ObjectView {
  ref: string;
  namespace: string;
  name: string;
  keys: Record<string, string>;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface RenderInput {
  objects: ReadonlyMap<ObjectId, DesiredObject>;
  cluster: { name: string; labels: Record<string, string> };
  secrets: SecretsAccess;
}

/** Per render: what it read, and the secret values it saw (scrubbed from any error text). */
export class Session {
  readonly deps = new Deps();
  readonly secretValues = new Set<string>();
  constructor(readonly input: RenderInput) {}

  /** Never a value in an error: each secret value this render saw is cut out. */
  scrub(text: string): string {
    let out = text;
    // Longest first, so a value containing another is cut whole. Short values
    // (under 4 chars) would cut ordinary words; they cannot carry much either.
    for (const v of [...this.secretValues].sort((a, b) => b.length - a.length)) if (v.length >= 4) out = out.split(v).join('***');
    return out;
  }
}

const byRef = (a: ObjectView, b: ObjectView) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0);

/**
 * ConfigMap views by desired object: a changed object is a new DesiredObject, so
 * an entry is never stale, and a render over 1,000 objects converts only those
 * that changed since the last one. Liquid cannot modify a view (`assign` makes
 * new variables), so views are shared. Secret views are never kept.
 */
const configViews = new WeakMap<DesiredObject, ObjectView>();

/** `configmaps` / `secrets` as a template sees them. */
export class ObjectsDrop extends Drop {
  private readonly views = new Map<string, ObjectView | undefined>();
  private sorted?: ObjectView[];

  constructor(
    private readonly kind: ObjectKind,
    private readonly session: Session,
  ) {
    super();
  }

  /** `configmaps["ns/name"]`: recorded even when absent (it may appear later). */
  override liquidMethodMissing(ref: unknown): ObjectView | undefined {
    if (typeof ref !== 'string') return undefined;
    this.session.deps.ids.add(`${this.kind}/${ref}`);
    return this.view(ref);
  }

  /** Iterating the whole map (`for pair in configmaps`): every object, by ref. */
  override valueOf(): Record<string, ObjectView> {
    this.session.deps.kinds.add(this.kind);
    return Object.fromEntries(this.all().map((v) => [v.ref, v]));
  }

  toJSON(): Record<string, ObjectView> {
    return this.valueOf();
  }

  /** The `match` filter: objects whose ref matches the glob, sorted by ref. */
  match(glob: string): ObjectView[] {
    this.session.deps.addGlob(this.kind, glob);
    return this.all().filter((v) => matchesGlob(v.ref, glob));
  }

  /** Every object of this kind, by ref; built once per render (a template may `match` many times). */
  private all(): ObjectView[] {
    this.deny();
    if (this.sorted) return this.sorted;
    const prefix = `${this.kind}/`;
    const views: ObjectView[] = [];
    for (const [id, obj] of this.session.input.objects) if (id.startsWith(prefix)) views.push(this.toView(obj));
    return (this.sorted = views.sort(byRef));
  }

  private view(ref: string): ObjectView | undefined {
    this.deny();
    if (this.views.has(ref)) return this.views.get(ref);
    const obj = this.session.input.objects.get(`${this.kind}/${ref}` as ObjectId);
    const view = obj && this.toView(obj);
    this.views.set(ref, view);
    return view;
  }

  private toView(obj: DesiredObject): ObjectView {
    const sealed = this.kind === 'secrets';
    const cached = sealed ? undefined : configViews.get(obj);
    if (cached) return cached;
    const keys: Record<string, string> = {};
    for (const [k, v] of [...obj.data].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (sealed && this.session.input.secrets === 'mask') keys[k] = MASK;
      else {
        keys[k] = v.toString('utf8');
        if (sealed) this.session.secretValues.add(keys[k]!);
      }
    }
    const view = { ref: `${obj.namespace}/${obj.name}`, namespace: obj.namespace, name: obj.name, keys, labels: { ...obj.labels }, annotations: { ...obj.annotations } };
    if (!sealed) configViews.set(obj, view);
    return view;
  }

  private deny(): void {
    if (this.kind === 'secrets' && this.session.input.secrets === 'deny') {
      throw new Error('this template may not read secrets: its dest is outside the secrets root and its mode is not 0600/0400');
    }
  }
}
