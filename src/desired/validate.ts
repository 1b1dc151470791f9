/**
 * The checks a stored key must pass before a daemon uses it — one code path for
 * the daemon (the KeyStore, build.ts and the reconciler's SecretCache call these same
 * functions), `plan` (it runs the daemon's reconciler) and `lint` (validateKeys, over
 * the whole prefix):
 *
 *  (1) the key itself: the layout and Kubernetes' name rules (keyspace.parseKey);
 *  (2) `@meta`: JSON, the strict schema, the bounds (meta.parseMeta);
 *  (3) a value under `secrets/`: an envelope by its structure (magic, version,
 *      stanzas, lengths, base64) — judged without a key; opening it needs an
 *      identity and is the caller's (the daemon's SecretCache, `lint --identity`);
 *  (4) per object: the key count and byte limits (build.overLimits), counted over
 *      the keys one cluster would merge (global + its own overrides);
 *  (5) a template under `<scope>/templates/`: parses, when the caller passes the
 *      parser (render/ sits above this layer; `lint` does).
 *
 * Pure: no I/O. Every problem names the logical path and never a value.
 */
import { decodeEnvelope, EnvelopeError } from '../envelope/format.js';
import { isSealed, objectId, parseKey, printable, type ObjectId } from '../keyspace.js';
import type { Kv } from '../source/types.js';
import { parseMeta } from './meta.js';

/** A reportable problem: the etcd key (without prefix) and why. Never a value. */
export interface Problem {
  path: string;
  reason: string;
  /** A secret that did not open (counted apart from malformed input). */
  unopened?: boolean;
}

/** Per-object bounds: one huge object must not starve the others (Kubernetes caps an object at 1 MiB). */
export interface BuildLimits {
  maxKeys: number;
  maxBytes: number;
}

/** Why an object with these keys is too big to materialize, if it is. */
export function overLimits(winners: ReadonlyMap<string, Kv>, limits: BuildLimits | undefined): string | undefined {
  if (!limits) return undefined;
  if (winners.size > limits.maxKeys) return `object has ${winners.size} keys, over limits.maxObjectKeys (${limits.maxKeys}); last good state kept`;
  let bytes = 0;
  for (const kv of winners.values()) bytes += kv.value.length;
  if (bytes > limits.maxBytes) return `object holds ${bytes} bytes, over limits.maxObjectBytes (${limits.maxBytes}); last good state kept`;
  return undefined;
}

/** (3) Why a sealed value cannot be an envelope, judged without a key; undefined if it could be one. */
export function envelopeShapeError(value: Buffer): string | undefined {
  try {
    decodeEnvelope(value);
    return undefined;
  } catch (err) {
    if (err instanceof EnvelopeError) return err.message;
    throw err;
  }
}

/** A key with its value, as lint reads it: `path` is the logical path (no prefix). */
export interface CheckedKv {
  path: string;
  value: Buffer;
}

export interface Validation {
  problems: Problem[];
  /** Values under `secrets/` that passed (3): the caller may try to open them. */
  sealed: CheckedKv[];
}

/**
 * (1)–(4) over every key under a prefix (`prefix` ends with "/"). Keys that are
 * not object data (recipients/, status/, @release) pass (1) only.
 */
export function validateKeys(kvs: Kv[], prefix: string, limits?: BuildLimits, templateError?: (source: string) => string | undefined): Validation {
  const problems: Problem[] = [];
  const sealed: CheckedKv[] = [];
  // object id -> scope ("global" or "clusters/<c>") -> data key -> kv, for (4)
  const objects = new Map<ObjectId, Map<string, Map<string, Kv>>>();
  for (const kv of kvs) {
    const rel = kv.key.startsWith(prefix) ? kv.key.slice(prefix.length) : kv.key;
    const parsed = parseKey(rel); // (1)
    if (parsed.type === 'invalid') {
      problems.push({ path: printable(rel), reason: parsed.reason });
      continue;
    }
    if (parsed.type === 'meta') {
      const meta = parseMeta(kv.value); // (2)
      if ('error' in meta) problems.push({ path: parsed.logicalPath, reason: meta.error });
      continue;
    }
    if (parsed.type === 'template') {
      const err = templateError?.(kv.value.toString('utf8')); // (5)
      if (err) problems.push({ path: parsed.logicalPath, reason: err });
      continue;
    }
    if (parsed.type !== 'data') continue;
    if (isSealed(parsed.kind)) {
      const shape = envelopeShapeError(kv.value); // (3)
      if (shape) problems.push({ path: parsed.logicalPath, reason: shape, unopened: true });
      else sealed.push({ path: parsed.logicalPath, value: kv.value });
    }
    const id = objectId(parsed.kind, parsed.namespace, parsed.name);
    const scope = parsed.scope.type === 'global' ? 'global' : `clusters/${parsed.scope.cluster}`;
    const scopes = objects.get(id) ?? new Map<string, Map<string, Kv>>();
    objects.set(id, scopes);
    const keys = scopes.get(scope) ?? new Map<string, Kv>();
    scopes.set(scope, keys);
    keys.set(parsed.key, kv);
  }
  if (limits) {
    for (const [id, scopes] of objects) {
      const global = scopes.get('global') ?? new Map<string, Kv>();
      const views: [string, Map<string, Kv>][] = [['global', global]];
      for (const [scope, keys] of scopes) if (scope !== 'global') views.push([scope, new Map([...global, ...keys])]);
      for (const [scope, winners] of views) {
        const over = overLimits(winners, limits); // (4)
        if (over) problems.push({ path: scope === 'global' ? id : `${id} (as ${scope} merges it)`, reason: over });
      }
    }
  }
  return { problems, sealed };
}
