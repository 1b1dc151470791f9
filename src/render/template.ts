import { CaptureTag, Context, Liquid, toValueSync, type Emitter, type Template } from 'liquidjs';
import { printable } from '../keyspace.js';
import { ObjectsDrop, Session, type Deps, type RenderInput } from './data.js';
import { FILTERS, text } from './filters.js';

export { Deps, MASK, type ObjectView, type RenderInput, type SecretsAccess } from './data.js';
export { FILTERS } from './filters.js';

/**
 * The Liquid side of templates (README "Templates"): one engine per `missing`
 * mode with our filters (filters.ts), rendering `configmaps`, `secrets` (data.ts)
 * and `cluster` (`name`, `labels`). Pure: no I/O. Rendering is synchronous, so a
 * render sees one consistent desired state (the reconcile loop calls it at an idle
 * point, render/renderer.ts).
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

export type RenderOutcome = (
  | { ok: true; text: string }
  /** `missing`: the error is an absent variable, object or key (strict mode). `error` never holds a value. */
  | { ok: false; missing: boolean; error: string }
) & {
  deps: Deps;
  /** Cuts the secret values this render read out of a text (a checker's stderr, an error). */
  scrub: (text: string) => string;
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
