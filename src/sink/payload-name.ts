/**
 * Names of the payload dirs inside an object dir:
 *
 *   ..<UTC timestamp>.<hash>.<random>      e.g. ..2024_05_01_12_00_00_123.0123456789abcdef.Ab3dEf
 *
 * The timestamp is kubelet's habit (readable, sorts by age); `<random>` is
 * mkdtemp's; `<hash>` says what the dir holds, so an up-to-date check needs no
 * file reads. Dirs written by older versions have no `<hash>` part.
 */
import { createHash } from 'node:crypto';

/** What `..data` may point at: one of our timestamped dirs, never a path. */
const PAYLOAD_DIR = /^\.\.\d{4}_[-_.A-Za-z0-9]+$/;
/** The same with the hash part (fixed-width pieces, no nested quantifiers: linear time). */
const HASHED = /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d_\d{3}\.([0-9a-f]{16})\.[A-Za-z0-9]{6}$/;

export function isPayloadDirName(name: string): boolean {
  return PAYLOAD_DIR.test(name);
}

/** The hash part of a payload dir name; undefined for names without one. */
export function hashInName(name: string): string | undefined {
  return HASHED.exec(name)?.[1];
}

/** The mkdtemp prefix for a new payload dir. */
export function payloadDirPrefix(now: Date, hash: string): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const stamp = `${now.getUTCFullYear()}_${p(now.getUTCMonth() + 1)}_${p(now.getUTCDate())}_${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}_${p(now.getUTCMilliseconds(), 3)}`;
  return `..${stamp}.${hash}.`;
}

/**
 * 16 hex of sha256 over what the files are written with (file and dir mode,
 * owner) and the payload, names sorted, each length-prefixed so no two
 * payloads hash alike by shifting bytes between name and value.
 */
export function payloadHash(payload: Map<string, Buffer>, w: { fileMode: number; dirMode: number; uid?: number; gid?: number }): string {
  const h = createHash('sha256').update(JSON.stringify([w.fileMode, w.dirMode, w.uid ?? null, w.gid ?? null]));
  for (const key of [...payload.keys()].sort()) {
    const value = payload.get(key)!;
    h.update(`\n${key.length}:${key}:${value.length}:`).update(value);
  }
  return h.digest('hex').slice(0, 16);
}
