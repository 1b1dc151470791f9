import fs from 'node:fs';
import path from 'node:path';
import type { Liquid, Template } from 'liquidjs';
import type { Config } from '../config/schema.js';
import { UserError } from '../errors.js';
import { isInside } from '../state/location.js';
import { createEngine, parseTemplate, readsSecrets, type MissingMode } from './template.js';

export type TemplateConfig = Config['templates'][number];

/** A configured template, checked and ready to render. */
export interface PreparedTemplate {
  index: number;
  cfg: TemplateConfig;
  engine: Liquid;
  /** May it read secrets (issue 15 item 4)? A template that may not sees no secrets at all. */
  secrets: boolean;
  /** Parsed at start for `source:` templates; `etcd:` ones are parsed as their key changes. */
  parsed?: Template[];
}

/** The secrets root the file sink uses, if there is a file sink. */
export function secretsRoot(cfg: Config): string | undefined {
  const files = cfg.sinks.files;
  return files ? (files.secretsRoot ?? path.join(files.root, 'secrets')) : undefined;
}

/** The path a service opens: dest, or <dest>/<destFile> (a link into `..data`) in the directory form. */
export function renderedPath(t: TemplateConfig): string {
  return t.destFile === undefined ? t.dest : path.join(t.dest, t.destFile);
}

/**
 * Why a directory dest would clash with the file sink, if it would. The sink
 * reads everything below its kind roots as its own layout: a `<dir>/<file>`
 * there is `<namespace>/<name>` to its drift watch (a hint for an object that
 * does not exist, whose removal then meets our link and fails), and a dir two
 * levels down is an object dir it prunes. So a directory dest stays outside
 * them; mode "0600"/"0400" lets it read secrets anywhere.
 */
function sinkClash(cfg: Config, t: TemplateConfig): string | undefined {
  const files = cfg.sinks.files;
  if (t.destFile === undefined || !files) return undefined;
  for (const root of [path.join(files.root, 'configmaps'), secretsRoot(cfg)!]) {
    if (isInside(t.dest, root)) {
      return `a directory dest must not be inside the file sink's ${root} (the sink takes what is there for its own objects); choose a dir elsewhere (with mode "0600"/"0400" it may still read secrets)`;
    }
  }
  return undefined;
}

/**
 * A template may read secrets only when its file is as private as the secrets
 * files are: `dest` under the secrets root (0700 dirs, on tmpfs) or mode 0600/0400.
 */
export function secretsAllowed(cfg: Config, t: TemplateConfig): boolean {
  const root = secretsRoot(cfg);
  return (root !== undefined && isInside(t.dest, root)) || t.mode === 0o600 || t.mode === 0o400;
}

/**
 * The config's templates, checked at start (exit 2 with one line naming the field):
 * a `source:` file must be readable and parse, and may name `secrets` only where
 * `secretsAllowed`. An `etcd:` template cannot be checked here (it arrives later):
 * where secrets are not allowed it is rendered with no secrets in its data, and
 * reading them fails that render (render/renderer.ts reports it by name).
 */
export function prepareTemplates(cfg: Config): PreparedTemplate[] {
  const engines = new Map<MissingMode, Liquid>();
  return cfg.templates.map((t, index) => {
    const field = `field templates[${index}]`;
    let engine = engines.get(t.missing);
    if (!engine) engines.set(t.missing, (engine = createEngine(t.missing)));
    const clash = sinkClash(cfg, t);
    if (clash) throw new UserError(`${field}.dest: ${t.dest}: ${clash}`);
    const secrets = secretsAllowed(cfg, t);
    if (!t.source) return { index, cfg: t, engine, secrets };
    let text: string;
    try {
      text = fs.readFileSync(t.source, 'utf8');
    } catch (err) {
      throw new UserError(`${field}.source: cannot read ${t.source} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const parsed = parseTemplate(engine, text);
    if ('error' in parsed) throw new UserError(`${field}.source: ${t.source} is not a valid Liquid template: ${parsed.error}`);
    if (!secrets && readsSecrets(engine, parsed.parsed)) {
      const root = secretsRoot(cfg);
      throw new UserError(
        `${field}.mode: template "${t.name}" reads secrets, so its file must be private: set mode "0600" or "0400"${root ? `, or put dest (${t.dest}) under the secrets root ${root}` : ''}`,
      );
    }
    return { index, cfg: t, engine, secrets, parsed: parsed.parsed };
  });
}
