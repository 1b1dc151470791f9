import type { ObjectKind } from '../desired/types.js';

/**
 * The key layout (SPEC §1) — the public API:
 *
 *   PREFIX/global/<kind>/<ns>/<name>/<key>
 *   PREFIX/clusters/<cluster>/<kind>/<ns>/<name>/<key>
 *   PREFIX/<scope>/<kind>/<ns>/<name>/@meta
 *   PREFIX/recipients/<cluster>
 *   PREFIX/status/<cluster>/<node>
 *
 * Everything else under PREFIX is invalid input: reported and skipped.
 */

export type Scope = { type: 'global' } | { type: 'cluster'; cluster: string };

export type ParsedKey =
  | { type: 'data'; scope: Scope; kind: ObjectKind; namespace: string; name: string; key: string; logicalPath: string }
  | { type: 'meta'; scope: Scope; kind: ObjectKind; namespace: string; name: string; logicalPath: string }
  | { type: 'recipient'; cluster: string }
  | { type: 'status'; cluster: string; node: string }
  | { type: 'invalid'; reason: string };

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DATA_KEY = /^[-._a-zA-Z0-9]+$/;

/** Kubernetes namespace rule: DNS-1123 label, at most 63 characters. */
export function namespaceError(ns: string): string | undefined {
  if (ns.length > 63 || !DNS1123_LABEL.test(ns)) return `namespace "${ns}" is not a DNS-1123 label`;
  return undefined;
}

/** ConfigMap/Secret name rule: DNS-1123 subdomain, at most 253 characters. */
export function nameError(name: string): string | undefined {
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) return `name "${name}" is not a DNS-1123 subdomain`;
  return undefined;
}

/**
 * ConfigMap/Secret data-key rule (Kubernetes' IsConfigMapKey): `[-._a-zA-Z0-9]+`,
 * at most 253, not `.` or `..`, and not starting with `..` — which also keeps keys
 * clear of the file projection's own `..data` and `..<timestamp>` entries.
 */
export function dataKeyError(key: string): string | undefined {
  if (key.length === 0 || key.length > 253 || !DATA_KEY.test(key)) return `key "${printable(key)}" must match [-._a-zA-Z0-9]+ (1-253 chars)`;
  if (key === '.' || key === '..' || key.startsWith('..')) return `key "${key}" must not be "." or start with ".."`;
  return undefined;
}

/** Cluster names appear in keys and as etcd users: DNS-1123 labels. */
export function clusterError(cluster: string): string | undefined {
  if (cluster.length > 63 || !DNS1123_LABEL.test(cluster)) return `cluster "${cluster}" is not a DNS-1123 label`;
  return undefined;
}

/** Keep reported paths on one readable line even when a key holds control bytes. */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function scopePath(scope: Scope): string {
  return scope.type === 'global' ? 'global' : `clusters/${scope.cluster}`;
}

/** Parse a key relative to the prefix (`rest` has no leading PREFIX/). */
export function parseKey(rest: string): ParsedKey {
  const parts = rest.split('/');
  let scope: Scope;
  let i: number;
  if (parts[0] === 'global') {
    scope = { type: 'global' };
    i = 1;
  } else if (parts[0] === 'clusters') {
    const cluster = parts[1] ?? '';
    const err = clusterError(cluster);
    if (err) return { type: 'invalid', reason: printable(err) };
    scope = { type: 'cluster', cluster };
    i = 2;
  } else if (parts[0] === 'recipients') {
    if (parts.length !== 2) return { type: 'invalid', reason: 'expected recipients/<cluster>' };
    const err = clusterError(parts[1]!);
    return err ? { type: 'invalid', reason: printable(err) } : { type: 'recipient', cluster: parts[1]! };
  } else if (parts[0] === 'status') {
    if (parts.length !== 3 || !parts[2]) return { type: 'invalid', reason: 'expected status/<cluster>/<node>' };
    return { type: 'status', cluster: parts[1]!, node: parts[2]! };
  } else {
    return { type: 'invalid', reason: 'expected global/, clusters/<cluster>/, recipients/ or status/ after the prefix' };
  }
  const [kind, namespace, name, key, ...extra] = parts.slice(i);
  if (kind !== 'configmaps' && kind !== 'secrets') return { type: 'invalid', reason: `kind must be configmaps or secrets, not "${printable(kind ?? '')}"` };
  if (namespace === undefined || name === undefined || key === undefined || extra.length > 0) {
    return { type: 'invalid', reason: `expected ${scopePath(scope)}/${kind}/<namespace>/<name>/<key>` };
  }
  const err = namespaceError(namespace) ?? nameError(name);
  if (err) return { type: 'invalid', reason: printable(err) };
  const logicalPath = `${scopePath(scope)}/${kind}/${namespace}/${name}/${key}`;
  if (key === '@meta') return { type: 'meta', scope, kind, namespace, name, logicalPath };
  const keyErr = dataKeyError(key);
  if (keyErr) return { type: 'invalid', reason: keyErr };
  return { type: 'data', scope, kind, namespace, name, key, logicalPath };
}
