/**
 * Opened secrets, per object: each envelope is opened once per mod revision,
 * and plaintext is kept only while its key exists. When a key's value changes or
 * the key goes, the old plaintext is overwritten with zeros as soon as no desired
 * object still holds it (a deleted secret must not linger in the heap).
 */
import { envelopeShapeError } from '../desired/validate.js';
import { EnvelopeError } from '../envelope/format.js';
import type { HighWater } from '../state/highwater.js';
import type { Kv } from '../source/types.js';
import type { ObjectId } from '../keyspace.js';

export type Opened = Buffer | { error: string };

/** Opens an envelope bound to `logicalPath`; rejects with a generic error. */
export type OpenSecret = (logicalPath: string, envelope: Buffer) => Promise<Buffer>;

/** Opens an envelope and tells its authenticated sealed version (0 for format v1). */
export type OpenVersioned = (logicalPath: string, envelope: Buffer) => Promise<{ plaintext: Buffer; version: number }>;

/** A good envelope older than one already accepted at its path. The message names times, never a value. */
export class ReplayedEnvelope extends EnvelopeError {
  constructor(version: number, mark: number) {
    super('replayed');
    // Date covers ±8.64e15 ms; a sealed version may go to 2^53-1 (a broken or hostile clock).
    const when = (v: number) => (v === 0 ? 'unversioned (format v1)' : v <= 8.64e15 ? `sealed ${new Date(v).toISOString()}` : `sealed version ${v}`);
    this.message = `envelope refused as a replay: ${when(version)}, older than the newest applied at this path (${when(mark)})`;
  }
}

/**
 * Replay protection around `open`:
 *  (1) open (authenticates the version together with the plaintext);
 *  (2) below the path's high-water mark: zero the plaintext, refuse (equal passes);
 *  (3) else raise the mark and hand the plaintext on.
 * Only an accepted value raises a mark, so a refused replay changes nothing.
 * Objects are reconciled one at a time each, and a path belongs to one object, so
 * no two opens of one path interleave between (2) and (3).
 */
export function replayGuarded(open: OpenVersioned, marks: HighWater): OpenSecret {
  return async (logicalPath, envelope) => {
    const { plaintext, version } = await open(logicalPath, envelope); // (1)
    const mark = marks.mark(logicalPath);
    if (version < mark) {
      plaintext.fill(0); // (2)
      throw new ReplayedEnvelope(version, mark);
    }
    marks.accept(logicalPath, version); // (3)
    return plaintext;
  };
}

interface Entry {
  rev: number;
  result: Opened;
}

export class SecretCache {
  private readonly byObject = new Map<ObjectId, Map<string, Entry>>();

  constructor(private readonly open: OpenSecret | undefined) {}

  /**
   * Make the object's cache hold exactly the secrets in `keys` (path → kv),
   * opening what is new or changed. Returns the plaintexts that left the cache:
   * the caller zeroes them once nothing it still uses refers to them.
   */
  async refresh(id: ObjectId, keys: Iterable<Kv & { path: string }>): Promise<Buffer[]> {
    const old = this.byObject.get(id) ?? new Map<string, Entry>();
    const next = new Map<string, Entry>();
    const opening: Promise<void>[] = [];
    for (const kv of keys) {
      const path = kv.path; // (the store slices it from the key when asked: once here)
      const cached = old.get(path);
      if (cached?.rev === kv.modRevision) {
        next.set(path, cached);
        continue;
      }
      // All of the object's new values at once (distinct paths): asked in one turn, they open as one batch.
      const entry: Entry = { rev: kv.modRevision, result: { error: 'secret not opened' } };
      next.set(path, entry);
      opening.push(this.openOne(path, kv.value).then((r) => void (entry.result = r)));
    }
    await Promise.all(opening);
    if (next.size > 0) this.byObject.set(id, next);
    else this.byObject.delete(id);
    const dropped: Buffer[] = [];
    for (const [path, entry] of old) {
      if (next.get(path) !== entry && Buffer.isBuffer(entry.result)) dropped.push(entry.result);
    }
    return dropped;
  }

  /** The plaintext of a secret at `path`, or why it cannot be opened. */
  get(path: string, id: ObjectId): Opened {
    return this.byObject.get(id)?.get(path)?.result ?? { error: 'secret not opened' };
  }

  /** Everything cached, for zeroing at shutdown. */
  clear(): Buffer[] {
    const all = [...this.byObject.values()].flatMap((m) => [...m.values()].map((e) => e.result)).filter(Buffer.isBuffer);
    this.byObject.clear();
    return all;
  }

  private async openOne(path: string, value: Buffer): Promise<Opened> {
    // Without an identity, the structural check `lint` makes (desired/validate.ts) still
    // names a value that cannot be an envelope; with one, `open` parses the same way.
    if (!this.open) return { error: envelopeShapeError(value) ?? 'no identity configured: cannot open secrets' };
    try {
      return await this.open(path, value);
    } catch (err) {
      return { error: (err as Error).message };
    }
  }
}

/** Overwrite plaintexts that nothing in `live` still refers to. */
export function zeroUnless(buffers: Buffer[], live: Iterable<Buffer>): void {
  if (buffers.length === 0) return;
  const keep = new Set(live);
  for (const b of buffers) if (!keep.has(b)) b.fill(0);
}
