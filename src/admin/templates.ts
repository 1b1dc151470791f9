import fs from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import { prepareTemplates, renderedPath } from '../render/load.js';
import { parseTemplate, renderTemplate, type SecretsAccess } from '../render/template.js';

/** One template rendered off-line (`template render`, `plan`): its text, or why not. */
export interface OfflineRender {
  name: string;
  /** The path a service opens: dest, or <dest>/<destFile> for a directory dest. */
  dest: string;
  mode: string;
  text?: string;
  error?: string;
  /** Against the file at dest now (never for masked output). */
  action?: 'create' | 'update' | 'unchanged';
}

/**
 * Renders the config's templates from a reconciler that has applied a listing of
 * etcd (what `plan` builds), the way the daemon would: same data, same secrets
 * rule. `secrets: 'mask'` shows placeholders for secret values (and so cannot say
 * whether dest would change). Throws UserError for a refused config (as `run`).
 */
export async function renderOffline(cfg: Config, reconciler: Reconciler, secrets: 'allow' | 'mask', only?: string): Promise<OfflineRender[]> {
  const results: OfflineRender[] = [];
  for (const t of prepareTemplates(cfg)) {
    const c = t.cfg;
    if (only !== undefined && c.name !== only) continue;
    const r: OfflineRender = { name: c.name, dest: renderedPath(c), mode: `0${c.mode.toString(8)}` };
    results.push(r);
    let parsed = t.parsed;
    if (c.etcd) {
      const kv = reconciler.store.template(c.etcd);
      if (!kv) {
        r.error = `no template "${c.etcd}" in etcd (global/templates/${c.etcd} or this cluster's scope)`;
        continue;
      }
      const p = parseTemplate(t.engine, kv.value.toString('utf8'));
      if ('error' in p) {
        r.error = `${kv.path} is not a valid Liquid template: ${p.error}`;
        continue;
      }
      parsed = p.parsed;
    }
    const access: SecretsAccess = t.secrets ? secrets : 'deny';
    const out = renderTemplate(t.engine, parsed!, { objects: reconciler.desiredObjects(), cluster: { name: cfg.cluster, labels: cfg.labels }, secrets: access });
    if (!out.ok) {
      r.error = out.missing && c.missing === 'keep' ? `waits (missing: keep): ${out.error}` : out.error;
      continue;
    }
    r.text = out.text;
    const { deps } = out;
    const readSecrets = deps.kinds.has('secrets') || deps.globs.some((g) => g.kind === 'secrets') || [...deps.ids].some((id) => id.startsWith('secrets/'));
    if (access === 'mask' && readSecrets) continue; // placeholders: no comparison with the real file
    const current = await fs.readFile(r.dest).catch(() => undefined);
    r.action = !current ? 'create' : current.equals(Buffer.from(out.text, 'utf8')) ? 'unchanged' : 'update';
  }
  return results;
}
