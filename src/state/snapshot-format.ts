/**
 * The local snapshot's file format: pure encode/decode, no I/O.
 *
 * What it holds: the keys this daemon applied, exactly as etcd holds them
 * (secret values are still the sealed envelopes that came from etcd: opening
 * one still needs the identity AND passes the replay guard again), the etcd
 * revision they are the state at, and the replay high-water marks.
 *
 * WIRE FORMAT (all integers big-endian):
 *
 *     magic     "confsync-snapshot:v1\n"                      21 bytes ASCII
 *     hlen      u32                                           length of header
 *     header    UTF-8 JSON, one object:
 *                 {"cluster","prefix","revision","savedAt",
 *                  "keys":[{"id": <fingerprint, 16 hex>, "sealed": <base64, 80 bytes>}…]}
 *     ssheader  24 bytes       crypto_secretstream_xchacha20poly1305 header
 *     chunks    repeated: u32 clen, clen bytes of secretstream ciphertext
 *               (each ≤ CHUNK plaintext bytes + 17); the last, and only the
 *               last, carries TAG_FINAL; nothing may follow it
 *
 *  - The file key: 32 random bytes, fresh per write, sealed (crypto_box_seal) to
 *    every public key of the daemon's identity (rotation: any of them opens it).
 *    Sealing needs no private key: the writer holds only public keys.
 *  - AD of every chunk = magic ‖ hlen ‖ header: cluster, prefix, revision and the
 *    key stanzas are authenticated with the body; a changed byte anywhere fails.
 *  - Plaintext of the chunks, concatenated: UTF-8 JSON
 *        {"kvs": [[key, value (standard base64), modRevision] …], "marks": {path: version …}}
 *  - Base64: standard alphabet with padding (Node's "base64"), here and in the header.
 *  - "id" names this write: the journal of changes appended after it
 *    (snapshot-journal.ts) carries the same id and is sealed with the same file
 *    key, so a journal left from an older write never applies to a newer one.
 *    Files written before the id existed open as before, with no journal.
 *
 * Every failure to open is one short reason (never a value, never a stack):
 * the file says which cluster/prefix it is for before anything is decrypted, so
 * "another cluster's snapshot" is told apart from "tampered or wrong key".
 */
import sodium from 'libsodium-wrappers';
import { randomBytes } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import { fingerprint, type Keyring } from '../envelope/identity.js';
import type { Kv } from '../source/types.js';

await sodium.ready;

export const SNAPSHOT_MAGIC = 'confsync-snapshot:v1\n';
const MAGIC = Buffer.from(SNAPSHOT_MAGIC, 'ascii');
const CHUNK = 1 << 20;
const SS_HEADER_BYTES = 24;
const SS_ABYTES = 17;
const MAX_HEADER_BYTES = 64 * 1024;

export interface SnapshotContent {
  /** The write's id (32 hex) that a journal must name; absent in files from before journals. */
  id?: string;
  cluster: string;
  prefix: string;
  /** The keys are etcd's state at this revision. */
  revision: number;
  /** ISO time of the write. */
  savedAt: string;
  kvs: Kv[];
  /** Replay high-water marks: logical path → sealed version. */
  marks: Map<string, number>;
}

/** Why a snapshot file was not used: one line for the operator. */
export class SnapshotUnusable extends Error {}

export interface EncodeOptions {
  /** Injectable for tests. */
  rng?: (n: number) => Uint8Array;
  /**
   * The file key to seal with (32 bytes), owned by the caller, who appends journal
   * records with it (state/snapshot.ts); fresh and zeroed after the encode when absent.
   */
  fileKey?: Uint8Array;
}

/** Keys encoded between two turns of the event loop (encodeSnapshotAsync). */
const KEYS_PER_STEP = 2000;

/** Seals `content` to every public key in `publicKeys`, in one go (tests, small states). */
export function encodeSnapshot(content: SnapshotContent, publicKeys: readonly Uint8Array[], opts: EncodeOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const steps = encodeSteps(content, publicKeys, opts, (b) => parts.push(b));
  while (!steps.next().done);
  return Buffer.concat(parts);
}

/**
 * The same bytes as encodeSnapshot, giving the event loop a turn after every
 * KEYS_PER_STEP keys and every sealed chunk: a 10,000-object state no longer
 * blocks the daemon (watch, health checks, file events) for the whole encode.
 * `content.kvs` and `content.marks` must not change meanwhile (the writer hands
 * copies).
 */
export async function encodeSnapshotAsync(content: SnapshotContent, publicKeys: readonly Uint8Array[], opts: EncodeOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  await writeSnapshotAsync(content, publicKeys, opts, async (b) => void parts.push(b));
  return Buffer.concat(parts);
}

/**
 * encodeSnapshotAsync's bytes handed to `write` in order as they are sealed (≤ one
 * CHUNK at a time), never whole: the file of 110,000 keys (17.7 MiB) used to be
 * held twice (its pieces, then their concatenation) at the end of a cold start,
 * ~36 MiB of the start's peak RSS. Resolves to the number of bytes written.
 */
export async function writeSnapshotAsync(content: SnapshotContent, publicKeys: readonly Uint8Array[], opts: EncodeOptions, write: (b: Buffer) => Promise<void>): Promise<number> {
  let queued: Buffer[] = [];
  let bytes = 0;
  const steps = encodeSteps(content, publicKeys, opts, (b) => queued.push(b));
  for (let done = false; !done; ) {
    done = !!steps.next().done;
    const out = queued;
    queued = [];
    for (const b of out) await write(b), (bytes += b.length);
    if (!done) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return bytes;
}

/**
 * The body is built and sealed in pieces: the kvs' JSON fragments a slice at a
 * time, each full CHUNK of plaintext sealed as soon as it is there (the last
 * chunk, 1..CHUNK bytes, carries TAG_FINAL). Plaintext buffers are zeroed once
 * sealed (config values are plaintext here).
 */
function* encodeSteps(content: SnapshotContent, publicKeys: readonly Uint8Array[], opts: EncodeOptions, out: (b: Buffer) => void): Generator<void> {
  if (publicKeys.length === 0) throw new RangeError('no public key to seal the snapshot to');
  const fileKey = opts.fileKey ?? (opts.rng ?? randomBytes)(32);
  try {
    const header = Buffer.from(
      JSON.stringify({
        cluster: content.cluster,
        prefix: content.prefix,
        revision: content.revision,
        savedAt: content.savedAt,
        ...(content.id ? { id: content.id } : {}),
        keys: publicKeys.map((pk) => ({ id: fingerprint(pk), sealed: Buffer.from(sodium.crypto_box_seal(fileKey, pk)).toString('base64') })),
      }),
      'utf8',
    );
    const ad = Buffer.concat([MAGIC, u32(header.length), header]);
    const { state, header: ssHeader } = sodium.crypto_secretstream_xchacha20poly1305_init_push(fileKey);
    out(ad);
    out(Buffer.from(ssHeader));
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const seal = (plain: Buffer, tag: number) => {
      const c = sodium.crypto_secretstream_xchacha20poly1305_push(state, plain, ad, tag);
      out(u32(c.length));
      out(Buffer.from(c.buffer, c.byteOffset, c.byteLength)); // libsodium's own copy out of its heap: no second one
    };
    /** Seals every full CHUNK while more than a CHUNK is pending (so the final chunk is never empty unless the body is). */
    const drain = function* (): Generator<void> {
      if (pendingBytes <= CHUNK) return;
      const buf = Buffer.concat(pending);
      for (const b of pending) b.fill(0);
      let off = 0;
      for (; buf.length - off > CHUNK; off += CHUNK) {
        seal(buf.subarray(off, off + CHUNK), sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
        yield;
      }
      const rest = Buffer.from(buf.subarray(off));
      buf.fill(0);
      pending = [rest];
      pendingBytes = rest.length;
    };
    const add = (text: string) => {
      const b = Buffer.from(text, 'utf8');
      pending.push(b);
      pendingBytes += b.length;
    };

    // Body: {"kvs":[[key, base64, modRevision], …],"marks":{path: version, …}} — JSON.stringify's own bytes.
    add('{"kvs":[');
    const kvs = content.kvs;
    for (let i = 0; i < kvs.length; i += KEYS_PER_STEP) {
      // Encoded afresh each full write (~2 µs a key, ~0.2 s for 110,000): a cache of
      // every key's fragment between writes held ~275 B a key (30 MiB) for writes
      // that come once per start or re-list.
      const slice: string[] = [];
      for (const kv of kvs.slice(i, i + KEYS_PER_STEP)) slice.push(kvEntry(kv));
      add((i > 0 ? ',' : '') + slice.join(','));
      yield* drain();
      yield;
    }
    add(`],"marks":${JSON.stringify(Object.fromEntries(content.marks))}}`);
    yield* drain();
    const last = Buffer.concat(pending);
    for (const b of pending) b.fill(0);
    seal(last, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    last.fill(0);
  } finally {
    if (!opts.fileKey) sodium.memzero(fileKey);
  }
}

/** The cluster/prefix a snapshot must be for, and the keys that may open it. */
export interface SnapshotExpect {
  cluster: string;
  prefix: string;
  keyring: Keyring;
}

/** Opens a snapshot file's bytes; throws SnapshotUnusable with one line saying why. */
export function decodeSnapshot(file: Buffer, expect: SnapshotExpect): SnapshotContent {
  const { content, fileKey } = openSnapshot(file, expect);
  sodium.memzero(fileKey);
  return content;
}

/**
 * decodeSnapshot, also handing back the file key (the caller opens the journal with
 * it, then zeroes it) and the fingerprints of the public keys the file key is sealed to.
 */
export function openSnapshot(file: Buffer, expect: SnapshotExpect): { content: SnapshotContent; fileKey: Uint8Array; sealedTo: string[] } {
  // (1) magic and header, in the clear
  if (file.length < MAGIC.length + 4 || !file.subarray(0, MAGIC.length).equals(MAGIC)) throw new SnapshotUnusable('not a confsync snapshot (v1)');
  const hlen = file.readUInt32BE(MAGIC.length);
  if (hlen > MAX_HEADER_BYTES || MAGIC.length + 4 + hlen + SS_HEADER_BYTES > file.length) throw new SnapshotUnusable('truncated or corrupt (header)');
  const adEnd = MAGIC.length + 4 + hlen;
  const header = parseHeader(file.subarray(MAGIC.length + 4, adEnd));
  // (2) for us? (authenticated below: a header edited to claim our cluster fails there)
  if (header.cluster !== expect.cluster || header.prefix !== expect.prefix) {
    throw new SnapshotUnusable(`written for cluster "${printable(header.cluster)}" prefix "${printable(header.prefix)}", not this daemon's cluster "${expect.cluster}" prefix "${expect.prefix}"`);
  }
  // (3) the file key, with any key of our identity that it was sealed to
  let fileKey: Uint8Array | undefined;
  for (const stanza of header.keys) {
    for (const id of expect.keyring.keysFor(Buffer.from(stanza.id, 'hex'))) {
      try {
        fileKey = sodium.crypto_box_seal_open(Buffer.from(stanza.sealed, 'base64'), id.publicKey, id.privateKey);
        break;
      } catch {
        // a colliding fingerprint: try the next
      }
    }
    if (fileKey) break;
  }
  if (!fileKey) throw new SnapshotUnusable('sealed to none of the keys in the identity file (identity replaced?)');
  // (4) the stream: every chunk authenticated with the header as AD, FINAL exactly at the end
  const ad = file.subarray(0, adEnd);
  // Each chunk's plaintext is decoded to text as it opens and zeroed at once (a decoder
  // keeps a UTF-8 sequence split between chunks): no second and third copy of the body
  // (the chunks kept, then concatenated) on the heap of a start — ~35 MiB at 110,000 keys.
  const decoder = new StringDecoder('utf8');
  const text: string[] = [];
  try {
    let state;
    try {
      state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(file.subarray(adEnd, adEnd + SS_HEADER_BYTES), fileKey);
    } catch {
      throw new SnapshotUnusable('corrupt (stream header)');
    }
    let off = adEnd + SS_HEADER_BYTES;
    let final = false;
    while (!final) {
      if (off + 4 > file.length) throw new SnapshotUnusable('truncated (no final chunk)');
      const clen = file.readUInt32BE(off);
      if (clen < SS_ABYTES || clen > CHUNK + SS_ABYTES || off + 4 + clen > file.length) throw new SnapshotUnusable('truncated or corrupt (chunk length)');
      const r = sodium.crypto_secretstream_xchacha20poly1305_pull(state, file.subarray(off + 4, off + 4 + clen), ad) as { message: Uint8Array; tag: number } | false;
      if (!r) throw new SnapshotUnusable('does not authenticate (tampered, or written by another identity)');
      text.push(decoder.write(Buffer.from(r.message.buffer, r.message.byteOffset, r.message.byteLength)));
      r.message.fill(0);
      final = r.tag === sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL;
      off += 4 + clen;
    }
    if (off !== file.length) throw new SnapshotUnusable('bytes after the final chunk');
  } catch (err) {
    sodium.memzero(fileKey);
    throw err;
  }
  text.push(decoder.end());
  try {
    const { keys: stanzas, ...fields } = header;
    return { content: { ...fields, ...parseBody(text.join('')) }, fileKey, sealedTo: stanzas.map((k) => k.id) };
  } catch (err) {
    sodium.memzero(fileKey);
    throw err;
  }
}

interface Header {
  id?: string;
  cluster: string;
  prefix: string;
  revision: number;
  savedAt: string;
  keys: { id: string; sealed: string }[];
}

function parseHeader(bytes: Buffer): Header {
  let h: unknown;
  try {
    h = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new SnapshotUnusable('corrupt (header is not JSON)');
  }
  const o = h as Partial<Header> | null;
  const ok =
    typeof o === 'object' && o !== null &&
    typeof o.cluster === 'string' && typeof o.prefix === 'string' && typeof o.savedAt === 'string' &&
    Number.isSafeInteger(o.revision) && (o.revision as number) > 0 &&
    (o.id === undefined || (typeof o.id === 'string' && /^[0-9a-f]{32}$/.test(o.id))) &&
    Array.isArray(o.keys) && o.keys.every((k) => typeof k?.id === 'string' && /^[0-9a-f]{16}$/.test(k.id) && typeof k.sealed === 'string');
  if (!ok) throw new SnapshotUnusable('corrupt (header fields)');
  return o as Header;
}

function parseBody(text: string): { kvs: Kv[]; marks: Map<string, number> } {
  let b: { kvs?: unknown; marks?: unknown };
  try {
    b = JSON.parse(text);
  } catch {
    throw new SnapshotUnusable('corrupt (body is not JSON)');
  }
  if (!Array.isArray(b?.kvs) || typeof b.marks !== 'object' || b.marks === null || Array.isArray(b.marks)) throw new SnapshotUnusable('corrupt (body fields)');
  return { kvs: (b.kvs as unknown[]).map(kvFromEntry), marks: marksFrom(b.marks) };
}

/** A key's entry in a body or a journal record: `[key, value (base64), modRevision]`. */
export function kvEntry(kv: Kv): string {
  return JSON.stringify([kv.key, kv.value.toString('base64'), kv.modRevision]);
}

/** The inverse of kvEntry, for parsed JSON (after authentication: malformed means corrupt). */
export function kvFromEntry(e: unknown): Kv {
  if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'string' || typeof e[1] !== 'string' || !Number.isSafeInteger(e[2])) throw new SnapshotUnusable('corrupt (a key entry)');
  return { key: e[0], value: Buffer.from(e[1], 'base64'), modRevision: e[2] };
}

/** `{path: version}` as parsed JSON → marks. */
export function marksFrom(o: object): Map<string, number> {
  const marks = new Map<string, number>();
  for (const [p, v] of Object.entries(o)) {
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw new SnapshotUnusable('corrupt (a high-water mark)');
    marks.set(p, v as number);
  }
  return marks;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** A header string shown in a message: printable ASCII only, bounded (it is untrusted until authenticated). */
function printable(s: string): string {
  const t = s.replace(/[^\x20-\x7e]/g, '?');
  return t.length > 64 ? `${t.slice(0, 64)}…` : t;
}
