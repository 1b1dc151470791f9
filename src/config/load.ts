import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { UserError } from '../errors.js';
import { fieldPath, formatIssues } from './issues.js';

import { configSchema, type Config } from './schema.js';

/**
 * Precedence, lowest first: schema defaults <- the YAML file (after ${VAR}
 * expansion) <- command-line overrides. A test pins this order.
 */
export interface ConfigOverrides {
  endpoints?: string[];
  prefix?: string;
}

/** Only the `etcd:` section of a config file, validated by the same schema (for CLI verbs). */
export function loadEtcdSection(file: string, overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config['etcd'] {
  const raw = readYaml(file);
  const etcd = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>).etcd : undefined;
  return parseConfig({ cluster: 'cli', etcd: etcd ?? {} }, file, overrides, env).etcd;
}

export function loadConfigFile(file: string, overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config {
  return parseConfig(readYaml(file), file, overrides, env);
}

function readYaml(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(`${file}: cannot read config file (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
  try {
    return parseYaml(text) ?? {};
  } catch (err) {
    throw new UserError(`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function parseConfig(raw: unknown, source: string, overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${source}: field (top level): must be a mapping of fields (cluster:, etcd:, …)`);
  const expanded = expandEnv(raw, [], source, env) as Record<string, any>;
  if (overrides.endpoints || overrides.prefix) {
    expanded.etcd = { ...(expanded.etcd ?? {}) };
    if (overrides.endpoints) expanded.etcd.endpoints = overrides.endpoints;
    if (overrides.prefix) expanded.etcd.prefix = overrides.prefix;
  }
  const result = configSchema.safeParse(expanded);
  if (!result.success) throw new UserError(`${source}: ${formatIssues(result.error)}`);
  return result.data;
}

/** `${VAR}` and `${VAR:-default}` in string values; an unset VAR without default is an error naming the field. */
function expandEnv(value: unknown, path: PropertyKey[], source: string, env: NodeJS.ProcessEnv): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      throw new UserError(`${source}: field ${fieldPath(path)}: environment variable ${name} is not set`);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, [...path, i], source, env));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, [...path, k], source, env)]));
  }
  return value;
}
