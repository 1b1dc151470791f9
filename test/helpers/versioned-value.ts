/**
 * Self-checking file contents for the atomicity test: `v<N>|<key>|` then a
 * padding byte repeated up to a size that depends on N (4-64 KiB). A truncated,
 * partially written or foreign file fails `parseVersionedValue`.
 */

export function versionedSize(version: number): number {
  return 4096 + ((version * 7919) % 61) * 1024;
}

export function versionedValue(version: number, key: string): Buffer {
  const header = Buffer.from(`v${version}|${key}|`);
  const buf = Buffer.alloc(versionedSize(version), 97 + (version % 26));
  header.copy(buf);
  return buf;
}

/** The version a complete, intact file holds, else undefined. */
export function parseVersionedValue(buf: Buffer, key: string): number | undefined {
  const m = /^v(\d+)\|([^|]*)\|/.exec(buf.subarray(0, 300).toString('latin1'));
  if (!m || m[2] !== key) return undefined;
  const version = Number(m[1]);
  if (buf.length !== versionedSize(version)) return undefined;
  const pad = 97 + (version % 26);
  for (let i = m[0].length; i < buf.length; i++) if (buf[i] !== pad) return undefined;
  return version;
}
