import { CaptureTag, Context, Drop, Liquid, toValueSync, type Emitter, type Template } from 'liquidjs';
import { stringify as toYaml } from 'yaml';
import type { DesiredObject } from '../desired/types.js';
import { matchesGlob } from '../glob.js';
import { printable, type ObjectId, type ObjectKind } from '../keyspace.js';

/**
 * The Liquid side of templates (README "Templates"): one engine per `missing`
 * mode, the filters, and the data a template sees. Pure: no I/O. Rendering is
 * synchronous, so a render sees one consistent desired state (the reconcile loop
 * calls it at an idle point, render/renderer.ts).
 *
 * Data: `configmaps` and `secrets` map "<namespace>/<name>" to
 * `{ ref, namespace, name, keys: {<key>: text}, labels, annotations }`, the object
 * as this cluster sees it (overrides and placement applied); `cluster` is
 * `{ name, labels }`. Both maps are drops: an object is turned into a view only
 * when the template reads it, and every read is recorded (`Deps`), so a template
 * re-renders only when something it read changed.
 *
 * Safety: Liquid runs no code. No template can read a host file (`include`,
 * `render` and `layout` look up an empty in-memory set); parse size, render time
 * and allocations are bounded (liquidjs' DoS limits, which also cap how many loop
 * iterations a render may run). liquidjs does not count output, so this module
 * does: the output stops at `LIMITS.outputBytes`, and `capture` and our filters
 * charge what they build to the allocation budget.
 */

export const LIMITS = {
  /** Characters of template source. */
  parseChars: 1_000_000,
  /** Wall time of one render, ms: a runaway loop fails instead of stalling the loop. */
  renderMs: 2_000,
  /** liquidjs' allocation budget (string and array sizes it creates). */
  memory: 64_000_000,
  /** Bytes of rendered output. */
  outputBytes: 8 * 1024 * 1024,
};

export type MissingMode = 'error' | 'empty' | 'keep';

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

export type RenderOutcome = (
  | { ok: true; text: string }
  /** `missing`: the error is an absent variable, object or key (strict mode). `error` never holds a value. */
  | { ok: false; missing: boolean; error: string }
) & {
  deps: Deps;
  /** Cuts the secret values this render read out of a text (a checker's stderr, an error). */
  scrub: (text: string) => string;
};

/** Per render: what it read, and the secret values it saw (scrubbed from any error text). */
class Session {
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
class ObjectsDrop extends Drop {
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

function text(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

/** Standard base64 (padding optional, whitespace ignored). A linear character check: no backtracking. */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A filter's `this` in liquidjs: the render's context, with its allocation budget. */
type FilterThis = { context?: { memoryLimit?: { use(n: number): void } } } | undefined;

/** What a filter builds counts against the render's allocation budget (liquidjs' own filters do the same). */
function charged<T extends string | unknown[]>(self: FilterThis, out: T): T {
  self?.context?.memoryLimit?.use(out.length);
  return out;
}

/** The filters confd/consul-template users reach for. Each throws a message without the value. */
export const FILTERS: Record<string, (this: FilterThis, v: unknown, ...args: unknown[]) => unknown> = {
  match(v, glob) {
    if (typeof glob !== 'string') throw new Error('match: needs a glob, e.g. match: "default/web-*"');
    if (v instanceof ObjectsDrop) return charged(this, v.match(glob));
    if (Array.isArray(v)) return charged(this, v.filter((o) => o && typeof o.ref === 'string' && matchesGlob(o.ref, glob)));
    throw new Error('match: use it on configmaps or secrets (or a list of their objects)');
  },
  base64(v) {
    return charged(this, Buffer.from(text(v), 'utf8').toString('base64'));
  },
  base64_decode(v) {
    const s = text(v).replace(/\s/g, '');
    if (s.length % 4 === 1 || !BASE64.test(s)) throw new Error('base64_decode: the input is not base64');
    return charged(this, Buffer.from(s, 'base64').toString('utf8'));
  },
  yaml(v) {
    return charged(this, toYaml(v instanceof ObjectsDrop ? v.valueOf() : v ?? null));
  },
  /** A double-quoted value for .env files (docker, dotenv, systemd EnvironmentFile): \ " $ ` escaped, newlines as \n. */
  env_quote(v) {
    return charged(this, `"${text(v).replace(/[\\"$`]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`);
  },
  /** One POSIX shell word: single-quoted, a ' inside as '\'' . */
  sh_quote(v) {
    return charged(this, `'${text(v).split("'").join("'\\''")}'`);
  },
};

/** liquidjs' `capture`, charging what it captured to the allocation budget (a capture doubling itself in a loop would not be counted otherwise). */
class BoundedCapture extends CaptureTag {
  override *render(ctx: Context): Generator<unknown, void, string> {
    const html: string = yield this.liquid.renderer.renderTemplates(this.templates, ctx);
    ctx.memoryLimit.use(html.length);
    ctx.bottom()[this.variable] = html;
  }
}

const TOO_LARGE = `output is larger than ${LIMITS.outputBytes} bytes`;

/** liquidjs' emitter, stopping the render once the output passes `LIMITS.outputBytes` (counted in UTF-16 units, ≤ bytes). */
class BoundedEmitter implements Emitter {
  buffer = '';
  write(html: unknown): void {
    const s = text(toValueSync(html));
    if (this.buffer.length + s.length > LIMITS.outputBytes) throw new Error(TOO_LARGE);
    this.buffer += s;
  }
}

/** One engine per missing mode; `error` and `keep` both render strictly (they differ in what the renderer does with a miss). */
export function createEngine(missing: MissingMode): Liquid {
  const engine = new Liquid({
    strictVariables: missing !== 'empty',
    // {% if configmaps["x"] %} and `| default:` test for presence without failing a strict render.
    lenientIf: true,
    ownPropertyOnly: true,
    // An empty in-memory set: include/render/layout find nothing, never a host file.
    templates: {},
    relativeReference: false,
    cache: false,
    parseLimit: LIMITS.parseChars,
    renderLimit: LIMITS.renderMs,
    memoryLimit: LIMITS.memory,
  });
  for (const [name, fn] of Object.entries(FILTERS)) engine.registerFilter(name, fn);
  engine.registerTag('capture', BoundedCapture);
  return engine;
}

/** Parse, with the error as one line (template source is not secret). */
export function parseTemplate(engine: Liquid, source: string): { parsed: Template[] } | { error: string } {
  try {
    return { parsed: engine.parse(source) };
  } catch (err) {
    return { error: printable(firstLine(err)) };
  }
}

/** Whether a template names `secrets` (statically; the render itself enforces it either way). */
export function readsSecrets(engine: Liquid, parsed: Template[]): boolean {
  try {
    return engine.globalVariablesSync(parsed).includes('secrets');
  } catch {
    return true; // cannot tell: treat as reading them
  }
}

export function renderTemplate(engine: Liquid, parsed: Template[], input: RenderInput): RenderOutcome {
  const session = new Session(input);
  const scope = {
    configmaps: new ObjectsDrop('configmaps', session),
    secrets: new ObjectsDrop('secrets', session),
    cluster: { name: input.cluster.name, labels: { ...input.cluster.labels } },
  };
  const { deps } = session;
  const scrub = (t: string) => session.scrub(t);
  try {
    // engine.renderSync with our emitter (it makes its own, unbounded).
    const emitter = new BoundedEmitter();
    toValueSync(engine.renderer.renderTemplates(parsed, new Context(scope, engine.options, { sync: true }, { liquid: engine }), emitter));
    if (Buffer.byteLength(emitter.buffer) > LIMITS.outputBytes) return { ok: false, missing: false, error: TOO_LARGE, deps, scrub };
    return { ok: true, text: emitter.buffer, deps, scrub };
  } catch (err) {
    // liquidjs reports any failed lookup as UndefinedVariableError; only its own "not defined" is a miss (a denied secret is not).
    const missing = (err as { originalError?: Error }).originalError?.name === 'InternalUndefinedVariableError';
    return { ok: false, missing, error: printable(scrub(firstLine(err))).slice(0, 400), deps, scrub };
  }
}

/**
 * An error's first line: liquidjs appends the template lines around the error to
 * `stack`, not to `message`, and output rendered so far is never in either.
 */
function firstLine(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split('\n')[0]!;
}
