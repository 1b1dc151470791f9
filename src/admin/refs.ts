/**
 * Operator references (`<namespace>/<name>[/<key>]` plus `--cluster`) turned into
 * etcd keys, validated exactly as the daemon parses keys.
 */
import { UserError } from '../errors.js';
import { clusterError, parseKey, printable, type Scope } from '../source/keys.js';

export interface ScopeFlags {
  cluster?: string;
}

/** `global`, or `clusters/<name>` for a valid --cluster. */
export function scopeOf(flags: ScopeFlags): string {
  if (!flags.cluster) return 'global';
  const err = clusterError(flags.cluster);
  if (err) throw new UserError(`--cluster: ${printable(err)}`);
  return `clusters/${flags.cluster}`;
}

export function scopeFromFlags(flags: ScopeFlags): Scope {
  scopeOf(flags); // validates the cluster name
  return flags.cluster ? { type: 'cluster', cluster: flags.cluster } : { type: 'global' };
}

/** `<ns>/<name>/<key>` (parts 3) or `<ns>/<name>` (parts 2) under the chosen scope → the full etcd key. */
export function objectKey(prefix: string, kind: 'configmaps' | 'secrets', ref: string, flags: ScopeFlags, parts: 2 | 3): string {
  const scope = scopeOf(flags);
  const segs = ref.split('/');
  if (segs.length !== parts) throw new UserError(`"${printable(ref)}": expected <namespace>/<name>${parts === 3 ? '/<key>' : ''}`);
  const rel = `${scope}/${kind}/${ref}${parts === 2 ? '/probe' : ''}`;
  const parsed = parseKey(rel);
  if (parsed.type === 'invalid') throw new UserError(`"${printable(ref)}": ${parsed.reason}`);
  return `${prefix}/${scope}/${kind}/${ref}`;
}

/** The listing prefix for `ls [ref]`: `PREFIX/<scope>/<kind>/[ref/]`. */
export function listPrefix(prefix: string, kind: 'configmaps' | 'secrets', ref: string | undefined, flags: ScopeFlags): string {
  return `${prefix}/${scopeOf(flags)}/${kind}/${ref ? `${ref.replace(/\/+$/, '')}/` : ''}`;
}

/** The key relative to the prefix (`PREFIX/` stripped). */
export function relative(prefix: string, key: string | Buffer): string {
  return key.toString().slice(prefix.length + 1);
}
