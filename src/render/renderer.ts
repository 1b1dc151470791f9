import { performance } from 'node:perf_hooks';
import type { Template } from 'liquidjs';
import type { StoredKv } from '../desired/build.js';
import type { DesiredObject } from '../desired/types.js';
import { printable, type ObjectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import { runCommand, sendSignal } from '../reactions/hooks.js';
import type { ReconcileEvent } from '../reconcile/events.js';
import { renderedPath, type PreparedTemplate } from './load.js';
import { parseTemplate, renderTemplate, type Deps, type RenderOutcome } from './template.js';
import { writeChecked, writeCheckedDir, type WriteOptions } from './write.js';

/** What the renderer reads from the reconcile loop. */
export interface RenderSource {
  /** Desired objects on this cluster, as the sinks get them. */
  desired(): ReadonlyMap<ObjectId, DesiredObject>;
  /** A template stored in etcd (cluster scope over global), if any. */
  template(name: string): StoredKv | undefined;
  /** The first full sync is done (before it, the desired state is incomplete). */
  synced(): boolean;
}

export interface RendererOptions {
  /** etcd prefix, e.g. /confsync: names the key an `etcd:` template is expected at. */
  prefix: string;
  cluster: string;
  labels: Record<string, string>;
  source: RenderSource;
  logger: Logger;
}

/** Results per template, for metrics (`confsync_template_renders_total`) and status. */
export type TemplateCounters = {
  written: number;
  unchanged: number;
  /** Render, check or write failed: the old file stayed. */
  failed: number;
  /** missing: keep, and something was missing: the old file stayed, quietly. */
  waiting: number;
  reloadFailed: number;
};

interface State {
  t: PreparedTemplate;
  parsed?: Template[];
  /** etcd: the mod revision of the template key last parsed (0: none in etcd). */
  sourceRevision?: number;
  /** What the last render read; undefined: render at the next idle point. */
  deps?: Deps;
  /** Output waiting for the write in flight. */
  next?: { text: string; scrub: (s: string) => string };
  writing?: Promise<void>;
}

/**
 * Renders the configured templates from the reconcile loop (README "Templates").
 *
 *  (1) `desired` events collect the objects whose desired state changed;
 *  (2) at each `idle` event — every change received so far is applied, never a
 *      half-applied revision, so one etcd transaction is one render — each
 *      template whose source changed, or whose last render read one of those
 *      objects (`Deps`), is rendered, synchronously, from that one state;
 *  (3) its output is written (render/write.ts: identical bytes skipped, `check`
 *      before the atomic swap — a rename, or for a directory dest the `..data`
 *      link) and then `reload` runs; writes of one template
 *      are serial and only the latest output waits, so a slow check never
 *      queues stale files;
 *  (4) any failure keeps the old file and is reported by template name, never
 *      with a value; the next change renders again.
 */
export class Renderer {
  readonly counters = new Map<string, TemplateCounters>();
  lastError?: { template: string; reason: string };
  private readonly states: State[];
  private changed = new Set<ObjectId>();
  private closed = false;

  constructor(templates: PreparedTemplate[], private readonly opts: RendererOptions) {
    this.states = templates.map((t) => ({ t, parsed: t.parsed }));
    for (const t of templates) this.counters.set(t.cfg.name, { written: 0, unchanged: 0, failed: 0, waiting: 0, reloadFailed: 0 });
  }

  /** A reconcile observer: (1), (2). */
  readonly observe = (e: ReconcileEvent): void => {
    if (e.type === 'desired') {
      if (this.states.length) this.changed.add(e.id); // no templates: nothing will ever read the set
    }
    else if (e.type === 'idle' && this.states.length && this.opts.source.synced()) this.renderDue();
  };

  /**
   * Render every template again at the next idle point (the daemon's deep resync):
   * a file edited or removed by hand is put back; identical bytes write nothing.
   */
  recheck(): void {
    for (const s of this.states) s.deps = undefined;
  }

  /** Waits for writes in flight (each bounded by its check's timeout). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.states.map((s) => s.writing));
  }

  /** (2) */
  private renderDue(): void {
    const changed = this.changed;
    this.changed = new Set();
    for (const s of this.states) {
      const sourceChanged = this.refreshSource(s);
      if (!s.parsed) continue;
      if (!sourceChanged && s.deps && ![...changed].some((id) => s.deps!.touches(id))) continue;
      const started = performance.now();
      const outcome = this.render(s);
      s.deps = outcome.deps;
      const ms = Math.round((performance.now() - started) * 10) / 10;
      if (outcome.ok) this.enqueue(s, outcome.text, outcome.scrub, ms);
      else if (outcome.missing && s.t.cfg.missing === 'keep') {
        this.count(s, 'waiting');
        this.opts.logger.info({ template: s.t.cfg.name, dest: s.t.cfg.dest, missing: outcome.error }, `template "${s.t.cfg.name}" waits for what it reads to exist; ${s.t.cfg.dest} keeps its old content`);
      } else this.fail(s, outcome.error);
    }
  }

  private render(s: State): RenderOutcome {
    const input = { objects: this.opts.source.desired(), cluster: { name: this.opts.cluster, labels: this.opts.labels }, secrets: s.t.secrets ? ('allow' as const) : ('deny' as const) };
    return renderTemplate(s.t.engine, s.parsed!, input);
  }

  /** An `etcd:` template's key: re-parsed when its revision moved. True when it changed. */
  private refreshSource(s: State): boolean {
    const name = s.t.cfg.etcd;
    if (!name) return false;
    const kv = this.opts.source.template(name);
    const revision = kv?.modRevision ?? 0;
    if (revision === s.sourceRevision) return false;
    s.sourceRevision = revision;
    s.parsed = undefined;
    if (!kv) {
      this.fail(s, `no template "${name}" in etcd (expected at ${this.opts.prefix}/global/templates/${name} or ${this.opts.prefix}/clusters/${this.opts.cluster}/templates/${name})`);
      return true;
    }
    const parsed = parseTemplate(s.t.engine, kv.value.toString('utf8'));
    if ('error' in parsed) this.fail(s, `${kv.path} is not a valid Liquid template: ${parsed.error}`);
    else s.parsed = parsed.parsed;
    return true;
  }

  /** (3) */
  private enqueue(s: State, text: string, scrub: (t: string) => string, ms: number): void {
    this.opts.logger.debug({ template: s.t.cfg.name, ms, bytes: Buffer.byteLength(text) }, 'template rendered');
    s.next = { text, scrub };
    s.writing ??= this.flush(s).finally(() => (s.writing = undefined));
  }

  private async flush(s: State): Promise<void> {
    while (s.next && !this.closed) {
      const { text, scrub } = s.next;
      s.next = undefined;
      await this.write(s, Buffer.from(text, 'utf8'), scrub).catch((err: Error) => this.fail(s, `cannot write ${s.t.cfg.dest}: ${scrub(err.message)}`));
    }
  }

  private async write(s: State, data: Buffer, scrub: (t: string) => string): Promise<void> {
    const c = s.t.cfg;
    const check = c.check;
    const live = renderedPath(c);
    const opts: WriteOptions = {
      mode: c.mode,
      dirMode: s.t.secrets ? 0o700 : 0o755,
      uid: c.owner,
      gid: c.group,
      check: check
        ? async (tmp) => {
            const { ok, fields } = await runCommand(check, { CONFSYNC_RENDERED_FILE: tmp, CONFSYNC_TEMPLATE: c.name }, c.checkTimeoutSeconds * 1000);
            // A checker may quote the file (nginx -t does): its stderr is scrubbed of the secret values this render read.
            return ok ? undefined : `check ${c.check![0]} refused the new file (${describe(fields, scrub)})`;
          }
        : undefined,
    };
    const result = c.destFile === undefined ? await writeChecked(c.dest, data, opts) : await writeCheckedDir(c.dest, c.destFile, data, opts);
    if (typeof result === 'object') return this.fail(s, result.refused);
    this.count(s, result);
    if (result === 'unchanged') return;
    this.opts.logger.info({ template: c.name, dest: live, bytes: data.length }, `template "${c.name}" written to ${live}`);
    if (!c.reload) return;
    const env = { CONFSYNC_TEMPLATE: c.name, CONFSYNC_RENDERED_FILE: live };
    const { ok, fields } = c.reload.command ? await runCommand(c.reload.command, env, c.reload.timeoutSeconds * 1000) : await sendSignal(c.reload.signal!.pidFile, c.reload.signal!.name);
    if (ok) return;
    this.count(s, 'reloadFailed');
    this.opts.logger.warn({ template: c.name, dest: live, reload: describe(fields, scrub) }, `template "${c.name}": reload failed; ${live} has the new content`);
  }

  /** (4) */
  private fail(s: State, reason: string): void {
    this.count(s, 'failed');
    const { name, dest } = s.t.cfg;
    this.lastError = { template: name, reason };
    this.opts.logger.warn({ template: name, dest, err: reason }, `template "${name}" not rendered: ${reason}; ${dest} keeps its old content, the next change renders it again`);
  }

  private count(s: State, what: keyof TemplateCounters): void {
    this.counters.get(s.t.cfg.name)![what]++;
  }
}

/** A command's outcome as one short phrase: exit code or signal, timeout, and the tail of stderr. */
function describe(fields: Record<string, unknown>, scrub: (t: string) => string): string {
  const parts: string[] = [];
  if (fields.err) parts.push(String(fields.err));
  if (fields.timedOutAfterSeconds) parts.push(`timed out after ${fields.timedOutAfterSeconds} s`);
  else if (fields.code !== null && fields.code !== undefined) parts.push(`exit ${fields.code}`);
  else if (fields.signal) parts.push(`killed by ${fields.signal}`);
  const stderr = typeof fields.stderr === 'string' ? fields.stderr.trim() : '';
  if (stderr) parts.push(`stderr: ${printable(scrub(stderr)).slice(-300)}`);
  return parts.join(', ');
}
