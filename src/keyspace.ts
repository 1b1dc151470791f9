/**
 * The key layout (SPEC §1) — the public API, known here and nowhere else:
 *
 *   PREFIX/global/<kind>/<ns>/<name>/<key>
 *   PREFIX/clusters/<cluster>/<kind>/<ns>/<name>/<key>
 *   PREFIX/<scope>/<kind>/<ns>/<name>/@meta
 *   PREFIX/<scope>/templates/<name>                       a Liquid template (render/)
 *   PREFIX/clusters/<cluster>/@release                    confirms held mass deletes
 *   PREFIX/recipients/<cluster>
 *   PREFIX/status/<cluster>/<node>
 *   PREFIX/rollouts/<id>                                  a staged rollout's state (admin/rollout*.ts)
 *   PREFIX/rollouts/@active/<kind>/<ns>/<name>            the id of the one rollout running on an object
 *
 * Daemons never read rollouts/ (it is outside the prefixes they watch).
 * A "logical path" is a key without `PREFIX/` (`global/secrets/default/db/password`):
 * what envelopes bind as associated data and what errors report. Every other module
 * asks this one to build or parse keys, and branches on a kind's properties in
 * `KINDS`, not on its name: a new kind is a row here plus the sinks that
 * materialize it. Everything else under PREFIX is invalid input: reported, skipped.
 */

/** The kinds of object, one row each. */
export const KINDS = {
  configmaps: { sealed: false, kubeKind: 'ConfigMap', fileMode: 0o644, dirMode: 0o755 },
  secrets: { sealed: true, kubeKind: 'Secret', fileMode: 0o400, dirMode: 0o700 },
} as const satisfies Record<string, { sealed: boolean; kubeKind: string; fileMode: number; dirMode: number }>;

export type ObjectKind = keyof typeof KINDS;
export const OBJECT_KINDS = Object.keys(KINDS) as ObjectKind[];

export function isKind(s: string | undefined): s is ObjectKind {
  return s !== undefined && Object.hasOwn(KINDS, s);
}

/** Values of this kind are sealed envelopes in etcd (plaintext only after opening). */
export function isSealed(kind: ObjectKind): boolean {
  return KINDS[kind].sealed;
}

/** `<kind>/<namespace>/<name>`: how objects are named everywhere (hooks, logs, status). */
export type ObjectId = string;

export interface ObjectRef {
  kind: ObjectKind;
  namespace: string;
  name: string;
}

export function objectId(kind: ObjectKind, namespace: string, name: string): ObjectId {
  return `${kind}/${namespace}/${name}`;
}

/** The parts of an id built by `objectId`; undefined when it is not one. */
export function parseObjectId(id: ObjectId): ObjectRef | undefined {
  const [kind, namespace, name, ...extra] = id.split('/');
  if (!isKind(kind) || namespace === undefined || name === undefined || extra.length > 0) return undefined;
  return { kind, namespace, name };
}

export type Scope = { type: 'global' } | { type: 'cluster'; cluster: string };

export const GLOBAL: Scope = { type: 'global' };

export function clusterScope(cluster: string): Scope {
  return { type: 'cluster', cluster };
}

/** `global` or `clusters/<cluster>`. */
export function scopePath(scope: Scope): string {
  return scope.type === 'global' ? 'global' : `clusters/${scope.cluster}`;
}

export const META_KEY = '@meta';
/** Under `clusters/<cluster>/`: an operator's confirmation that held mass deletes may go (reconcile/guard.ts). */
export const RELEASE_KEY = '@release';

/** Under `<scope>/`: Liquid templates a daemon's `templates: [{etcd: <name>}]` renders (render/). */
export const TEMPLATES_DIR = 'templates';

/** `<scope>/templates/<name>`. */
export function templatePath(scope: Scope, name: string): string {
  return `${scopePath(scope)}/${TEMPLATES_DIR}/${name}`;
}

/** `<scope>/<kind>/<ns>/<name>/<key>`; `key` may be `@meta`. */
export function logicalPath(scope: Scope, ref: ObjectRef, key: string): string {
  return `${scopePath(scope)}/${ref.kind}/${ref.namespace}/${ref.name}/${key}`;
}

/** Full etcd keys under one prefix. `prefix` has no trailing slash, e.g. `/confsync`. */
export class Keyspace {
  constructor(readonly prefix: string) {}

  /** A logical path as a full key. */
  key(logical: string): string {
    return `${this.prefix}/${logical}`;
  }

  /** A full key as a logical path (keys outside the prefix are returned whole). */
  relative(key: string): string {
    return key.startsWith(`${this.prefix}/`) ? key.slice(this.prefix.length + 1) : key;
  }

  dataKey(scope: Scope, ref: ObjectRef, key: string): string {
    return this.key(logicalPath(scope, ref, key));
  }

  /** `PREFIX/<scope>/` — what a daemon lists and watches, trailing slash included. */
  scopePrefix(scope: Scope): string {
    return `${this.key(scopePath(scope))}/`;
  }

  /** `PREFIX/<scope>/<kind>/[<ns>/[<name>/]]`: every key of a kind, namespace or object. */
  kindPrefix(scope: Scope, kind: ObjectKind, namespace?: string, name?: string): string {
    const tail = [namespace, name].filter((s) => s !== undefined).map((s) => `${s}/`).join('');
    return `${this.scopePrefix(scope)}${kind}/${tail}`;
  }

  /** What a daemon of `cluster` reads: global and its own scope, nothing else (least privilege). */
  watchedPrefixes(cluster: string): string[] {
    return [this.scopePrefix(GLOBAL), this.scopePrefix(clusterScope(cluster))];
  }

  releaseKey(cluster: string): string {
    return `${this.scopePrefix(clusterScope(cluster))}${RELEASE_KEY}`;
  }

  recipientKey(cluster: string): string {
    return this.key(`recipients/${cluster}`);
  }

  recipientsPrefix(): string {
    return this.key('recipients/');
  }

  templateKey(scope: Scope, name: string): string {
    return this.key(templatePath(scope, name));
  }

  statusKey(cluster: string, node: string): string {
    return this.key(`status/${cluster}/${node}`);
  }

  /** Every node's status, or one cluster's. */
  statusPrefix(cluster?: string): string {
    return this.key(`status/${cluster ? `${cluster}/` : ''}`);
  }

  /** A staged rollout's state (JSON), written only by `confsync rollout`. */
  rolloutKey(id: string): string {
    return this.key(`rollouts/${id}`);
  }

  rolloutsPrefix(): string {
    return this.key('rollouts/');
  }

  /** The lock that makes a second rollout of the same object fail: holds the running rollout's id. */
  rolloutLockKey(ref: ObjectRef): string {
    return this.key(`rollouts/${ROLLOUT_LOCK}/${objectId(ref.kind, ref.namespace, ref.name)}`);
  }

  parse(key: string): ParsedKey {
    return parseKey(this.relative(key));
  }
}

/** Under `rollouts/`: the per-object locks (an id never starts with `@`). */
export const ROLLOUT_LOCK = '@active';

export type ParsedKey =
  | ({ type: 'data'; scope: Scope; key: string; logicalPath: string } & ObjectRef)
  | ({ type: 'meta'; scope: Scope; logicalPath: string } & ObjectRef)
  | { type: 'release'; cluster: string }
  | { type: 'template'; scope: Scope; name: string; logicalPath: string }
  | { type: 'recipient'; cluster: string }
  | { type: 'status'; cluster: string; node: string }
  | { type: 'rollout'; id: string }
  | { type: 'rollout-lock'; ref: ObjectRef }
  | { type: 'invalid'; reason: string };

// Linear-time patterns only (no nested quantifiers): keys come from anyone who can write etcd.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN_PART = DNS1123_LABEL;
const DATA_KEY = /^[-._a-zA-Z0-9]+$/;

/** Kubernetes namespace rule: DNS-1123 label, at most 63 characters. */
export function namespaceError(ns: string): string | undefined {
  if (ns.length > 63 || !DNS1123_LABEL.test(ns)) return `namespace "${printable(ns.slice(0, 80))}" is not a DNS-1123 label`;
  return undefined;
}

/** ConfigMap/Secret name rule: DNS-1123 subdomain, at most 253 characters. */
export function nameError(name: string): string | undefined {
  if (name.length > 253 || !name.split('.').every((part) => DNS1123_SUBDOMAIN_PART.test(part))) {
    return `name "${printable(name.slice(0, 80))}" is not a DNS-1123 subdomain`;
  }
  return undefined;
}

/**
 * ConfigMap/Secret data-key rule (Kubernetes' IsConfigMapKey): `[-._a-zA-Z0-9]+`,
 * at most 253, not `.` or `..`, and not starting with `..` — which also keeps keys
 * clear of the file projection's own `..data` and `..<timestamp>` entries.
 */
export function dataKeyError(key: string): string | undefined {
  if (key.length === 0 || key.length > 253 || !DATA_KEY.test(key)) return `key "${printable(key.slice(0, 80))}" must match [-._a-zA-Z0-9]+ (1-253 chars)`;
  if (key === '.' || key === '..' || key.startsWith('..')) return `key "${key}" must not be "." or start with ".."`;
  return undefined;
}

/** Template names (`<scope>/templates/<name>`, `templates[].name`): DNS-1123 labels, so one reads the same in a key, a log line and a metric label. */
export function templateNameError(name: string): string | undefined {
  if (name.length > 63 || !DNS1123_LABEL.test(name)) return `template name "${printable(name.slice(0, 80))}" is not a DNS-1123 label (lowercase letters, digits, "-", at most 63)`;
  return undefined;
}

/** Cluster names appear in keys and as etcd users: DNS-1123 labels. */
export function clusterError(cluster: string): string | undefined {
  if (cluster.length > 63 || !DNS1123_LABEL.test(cluster)) return `cluster "${printable(cluster.slice(0, 80))}" is not a DNS-1123 label`;
  return undefined;
}

/**
 * Text from etcd made safe for one log line or a terminal: C0 and C1 controls, DEL
 * and the bidi overrides/isolates are shown as `\xNN` / `\u{NNNN}`, so a key or
 * status value cannot move the cursor, set a terminal title or reorder what is shown.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
  });
}

/**
 * Parse a logical path (a key without its `PREFIX/`). A data, meta or template
 * key's `logicalPath` is `rest` itself — the checks below prove it is the
 * canonical form — so a store of 110,000 keys holds no rebuilt copy of each.
 */
export function parseKey(rest: string): ParsedKey {
  const parts = rest.split('/');
  let scope: Scope;
  let i: number;
  if (parts[0] === 'global') {
    scope = GLOBAL;
    i = 1;
  } else if (parts[0] === 'clusters') {
    const cluster = parts[1] ?? '';
    const err = clusterError(cluster);
    if (err) return { type: 'invalid', reason: err };
    scope = clusterScope(cluster);
    i = 2;
  } else if (parts[0] === 'recipients') {
    if (parts.length !== 2) return { type: 'invalid', reason: 'expected recipients/<cluster>' };
    const err = clusterError(parts[1]!);
    return err ? { type: 'invalid', reason: err } : { type: 'recipient', cluster: parts[1]! };
  } else if (parts[0] === 'status') {
    if (parts.length !== 3 || !parts[2]) return { type: 'invalid', reason: 'expected status/<cluster>/<node>' };
    return { type: 'status', cluster: parts[1]!, node: parts[2]! };
  } else if (parts[0] === 'rollouts') {
    return parseRolloutKey(parts);
  } else {
    return { type: 'invalid', reason: 'expected global/, clusters/<cluster>/, recipients/, status/ or rollouts/ after the prefix' };
  }
  if (scope.type === 'cluster' && parts[i] === RELEASE_KEY && parts.length === i + 1) return { type: 'release', cluster: scope.cluster };
  if (parts[i] === TEMPLATES_DIR) {
    if (parts.length !== i + 2) return { type: 'invalid', reason: `expected ${scopePath(scope)}/${TEMPLATES_DIR}/<name>` };
    const err = templateNameError(parts[i + 1]!);
    return err ? { type: 'invalid', reason: err } : { type: 'template', scope, name: parts[i + 1]!, logicalPath: rest };
  }
  const [kind, namespace, name, key, ...extra] = parts.slice(i);
  if (!isKind(kind)) return { type: 'invalid', reason: `kind must be ${OBJECT_KINDS.join(' or ')}, not "${printable((kind ?? '').slice(0, 80))}"` };
  if (namespace === undefined || name === undefined || key === undefined || extra.length > 0) {
    return { type: 'invalid', reason: `expected ${scopePath(scope)}/${kind}/<namespace>/<name>/<key>` };
  }
  const err = namespaceError(namespace) ?? nameError(name);
  if (err) return { type: 'invalid', reason: err };
  const ref = { kind, namespace, name };
  if (key === META_KEY) return { type: 'meta', scope, ...ref, logicalPath: rest };
  const keyErr = dataKeyError(key);
  if (keyErr) return { type: 'invalid', reason: keyErr };
  return { type: 'data', scope, ...ref, key, logicalPath: rest };
}

/** A rollout id as `confsync rollout start` makes it (`20261205-142100-3fa2`): safe in a key and on a terminal. */
const ROLLOUT_ID = /^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$/;

export function rolloutIdError(id: string): string | undefined {
  return ROLLOUT_ID.test(id) ? undefined : `rollout id "${printable(id.slice(0, 80))}" is not one confsync made (YYYYMMDD-HHMMSS-xxxx)`;
}

function parseRolloutKey(parts: string[]): ParsedKey {
  if (parts.length === 2) {
    const err = rolloutIdError(parts[1]!);
    return err ? { type: 'invalid', reason: err } : { type: 'rollout', id: parts[1]! };
  }
  const [, lock, kind, namespace, name, ...extra] = parts;
  if (lock !== ROLLOUT_LOCK || !isKind(kind) || namespace === undefined || name === undefined || extra.length > 0) {
    return { type: 'invalid', reason: `expected rollouts/<id> or rollouts/${ROLLOUT_LOCK}/<kind>/<namespace>/<name>` };
  }
  const err = namespaceError(namespace) ?? nameError(name);
  return err ? { type: 'invalid', reason: err } : { type: 'rollout-lock', ref: { kind, namespace, name } };
}
