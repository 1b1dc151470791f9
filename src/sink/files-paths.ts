/**
 * Path rules for the file sink: which names may become files, and where the
 * secrets root really lives. Everything here is pure except `warnIfPersistent`.
 *
 * The sink reserves every name starting with `..` inside an object directory
 * (`..data`, `..data_tmp`, the timestamped `..<ts>` dirs, temporary links), the
 * way kubelet's AtomicWriter does. A key may therefore never start with `..`;
 * together with "no `/`, no NUL, one segment" this is what keeps every write
 * inside the root.
 */
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { objectId, type ObjectId, type ObjectKind } from '../keyspace.js';
import { InvalidInput } from '../errors.js';

/** Longest name kubelet accepts for a key; also fits NAME_MAX (255) with room. */
export const MAX_NAME_LENGTH = 253;

const KEY_CHARS = /^[-._a-zA-Z0-9]+$/;

/**
 * Why `key` cannot be a file name in an object directory, or undefined when it
 * can. Rules: ConfigMap/Secret data-key charset, one path segment, not `.`,
 * `..` or anything reserved (`..` prefix), at most 253 characters.
 */
export function keyProblem(key: string): string | undefined {
  const segment = segmentProblem(key);
  if (segment) return segment;
  if (!KEY_CHARS.test(key)) return 'must match [-._a-zA-Z0-9]+';
  return undefined;
}

/**
 * Why `segment` cannot be a namespace or object-name directory, or undefined.
 * Looser than a key (Kubernetes validates names upstream); here only what
 * could escape the root or collide with reserved names is refused.
 */
export function segmentProblem(segment: string): string | undefined {
  if (segment.length === 0) return 'is empty';
  if (segment.length > MAX_NAME_LENGTH) return `is longer than ${MAX_NAME_LENGTH} characters`;
  if (segment.includes('\0')) return 'contains a NUL byte';
  if (segment.includes('/') || segment.includes('\\')) return 'contains a path separator';
  if (path.isAbsolute(segment)) return 'is an absolute path';
  if (segment === '.' || segment === '..') return 'is a relative path element';
  if (segment.startsWith('..')) return "starts with '..' (reserved for the atomic writer)";
  return undefined;
}

/**
 * Throws InvalidInput (naming the id, never a value) unless kind, namespace,
 * name and every key can only ever name one dir or file inside the root.
 */
export function validateObject(id: ObjectId, kind: ObjectKind, namespace: string, name: string, keys: Iterable<string> = []): void {
  if (kind !== 'configmaps' && kind !== 'secrets') throw new InvalidInput(JSON.stringify(id), `unknown kind`);
  for (const [what, segment] of [['namespace', namespace], ['name', name]] as const) {
    const problem = segment === undefined ? 'is missing' : segmentProblem(segment);
    if (problem) throw new InvalidInput(JSON.stringify(id), `invalid ${what} ${JSON.stringify(segment)}: ${problem}`);
  }
  if (id !== objectId(kind, namespace, name)) throw new InvalidInput(JSON.stringify(id), 'id does not match kind/namespace/name');
  for (const key of keys) {
    const problem = keyProblem(key);
    if (problem) throw new InvalidInput(id, `invalid key ${JSON.stringify(key)}: ${problem}`);
  }
}

/** True when `child` is `parent` or lies below it (both absolute, normalized). */
export function isWithin(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

export interface MountEntry {
  mountPoint: string;
  fsType: string;
}

/** /proc/mounts lines -> entries; octal escapes (`\040` for a space) decoded. */
export function parseMounts(text: string): MountEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 3) continue;
    entries.push({ mountPoint: unescape(fields[1]!), fsType: fields[2]! });
  }
  return entries;
}

/** The filesystem type holding `target`: the longest mount point containing it; later mounts win ties. */
export function fsTypeAt(mounts: MountEntry[], target: string): string | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    if (!isWithin(m.mountPoint, target)) continue;
    if (!best || m.mountPoint.length >= best.mountPoint.length) best = m;
  }
  return best?.fsType;
}

/**
 * True when plaintext secrets under `secretsRoot` would land on a persistent
 * disk (anything but tmpfs/ramfs), or when that cannot be determined (no
 * /proc/mounts): the daemon logs a warning then. The root may not exist yet,
 * so the deepest existing ancestor is resolved (symlinks followed).
 */
export async function warnIfPersistent(secretsRoot: string): Promise<boolean> {
  let mountsText: string;
  try {
    mountsText = await readFile('/proc/mounts', 'utf8');
  } catch {
    return true;
  }
  let probe = path.resolve(secretsRoot);
  let resolved: string | undefined;
  for (;;) {
    try {
      resolved = path.join(await realpath(probe), path.relative(probe, path.resolve(secretsRoot)));
      break;
    } catch {
      const parent = path.dirname(probe);
      if (parent === probe) break;
      probe = parent;
    }
  }
  const fsType = fsTypeAt(parseMounts(mountsText), resolved ?? path.resolve(secretsRoot));
  return fsType !== 'tmpfs' && fsType !== 'ramfs';
}
