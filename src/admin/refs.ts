/**
 * Operator references (`<namespace>/<name>[/<key>]` plus `--cluster`) turned into
 * scopes and object refs, validated exactly as the daemon parses keys. Keys are
 * then built by src/keyspace.ts.
 */
import { UserError } from '../errors.js';
import { clusterError, clusterScope, GLOBAL, logicalPath, parseKey, printable, type ObjectKind, type ObjectRef, type Scope } from '../keyspace.js';

export interface ScopeFlags {
  cluster?: string;
}

/** GLOBAL, or the scope of a valid --cluster. */
export function scopeFromFlags(flags: ScopeFlags): Scope {
  if (!flags.cluster) return GLOBAL;
  const err = clusterError(flags.cluster);
  if (err) throw new UserError(`--cluster: ${err}`);
  return clusterScope(flags.cluster);
}

export interface Target {
  scope: Scope;
  ref: ObjectRef;
  /** The data key (`parts` 3); absent for a whole object (`parts` 2). */
  key?: string;
}

/** `<ns>/<name>/<key>` (parts 3) or `<ns>/<name>` (parts 2) of `kind` under the --cluster scope. */
export function parseRef(kind: ObjectKind, text: string, flags: ScopeFlags, parts: 2 | 3): Target {
  const scope = scopeFromFlags(flags);
  const segs = text.split('/');
  if (segs.length !== parts) throw new UserError(`"${printable(text)}": expected <namespace>/<name>${parts === 3 ? '/<key>' : ''}`);
  const [namespace, name, key] = segs as [string, string, string | undefined];
  const ref = { kind, namespace, name };
  const parsed = parseKey(logicalPath(scope, ref, key ?? 'probe'));
  if (parsed.type === 'invalid') throw new UserError(`"${printable(text)}": ${parsed.reason}`);
  return { scope, ref, key };
}

/** `ls [<ns>[/<name>]]`: the namespace and name to list under (not validated: listing shows invalid keys too). */
export function parseListRef(text: string | undefined): { namespace?: string; name?: string } {
  if (!text) return {};
  const [namespace, name, ...rest] = text.replace(/\/+$/, '').split('/');
  if (rest.length > 0) throw new UserError(`"${printable(text)}": expected <namespace> or <namespace>/<name>`);
  return { namespace, name };
}
