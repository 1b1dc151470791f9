/**
 * The envelope wire format, pure: text <-> parts, and the associated data.
 * No crypto happens here; envelope.ts seals and opens. docs/envelope-format.md
 * carries the same layout for people writing another implementation.
 *
 * TEXT (what etcd stores; printable ASCII, one line, safe for `etcdctl put`):
 *
 *     confsync:v2:<body>        (new seals)
 *     confsync:v1:<body>        (still opened; its sealed version counts as 0)
 *
 *   - "confsync:" is the magic; "v2:" the format version (decimal, then ':').
 *   - <body> is the binary body in base64url (RFC 4648 §5: A-Z a-z 0-9 - _),
 *     WITHOUT '=' padding. Decoders reject padding, whitespace inside, any other
 *     character, and non-canonical encodings (non-zero unused trailing bits), so
 *     one body has exactly one text.
 *   - Trailing ASCII whitespace (space, tab, CR, LF) after the body is ignored,
 *     so `confsync seal ... | etcdctl put KEY` works; nothing may precede the magic.
 *
 * BODY, all integers big-endian. v2 = an 8-byte sealed version, then exactly the
 * v1 layout (so v1 is v2 with S = 0 and without the first 8 bytes):
 *
 *     v1 offset   v2 offset   size     field
 *     -           0           8        V, sealed version: u64be milliseconds since
 *                                      the Unix epoch when sealed, 1 .. 2^53-1
 *     0           S           1        N, recipient stanza count, 1..255 (0 is invalid)
 *     1 + 88*i    S+1+88*i    8        stanza i: recipient fingerprint
 *                                      = BLAKE2b-256(recipient X25519 public key)[0..8]
 *     9 + 88*i    S+9+88*i    80       stanza i: crypto_box_seal(data_key, recipient_pk)
 *                                      (32-byte ephemeral pk || 32-byte key || 16-byte MAC)
 *     H           S+H         24       nonce for XChaCha20-Poly1305-IETF, H = 1 + 88*N
 *     H + 24      S+H+24      L + 16   crypto_aead_xchacha20poly1305_ietf_encrypt(
 *                                          plaintext, AD, nonce, data_key)
 *                                      = ciphertext (L bytes) || Poly1305 tag (16 bytes)
 *
 *   S = 8 for v2, 0 for v1. data_key is a fresh random 32-byte key per envelope;
 *   the body ends with the tag. Minimum body: S + 1 + 88 + 24 + 16 (129 v1, 137 v2).
 *
 * ASSOCIATED DATA (never stored; rebuilt by the opener):
 *
 *     AD = ASCII("confsync:vK:")           12 bytes, magic + version (K = 1 or 2)
 *       || u16be(byte length of P)          2 bytes
 *       || P                                logical path, UTF-8, e.g.
 *                                           "global/secrets/default/db/password"
 *       || body[0 .. S + H + 24]            (v2: V,) count, every stanza, the nonce
 *
 *   So the tag covers the format version, the sealed version V (it cannot be
 *   changed, e.g. to make an old value look new, without the data key), the path
 *   (an envelope moved to another key fails), and the whole stanza list (removing,
 *   reordering, swapping or editing any stanza fails for every recipient).
 */

export const MAGIC = 'confsync:';
/** The format version new seals write; FORMATS are the ones that open. */
export const FORMAT = 2;
export const FORMATS = [1, 2] as const;
export type Format = (typeof FORMATS)[number];
export const prefixOf = (format: Format): string => `${MAGIC}v${format}:`;
export const SEALED_VERSION_BYTES = 8;
/** Sealed versions stay exact JavaScript numbers; a larger one is refused as corrupt. */
export const MAX_SEALED_VERSION = Number.MAX_SAFE_INTEGER;
export const FINGERPRINT_BYTES = 8;
export const DATA_KEY_BYTES = 32;
/** crypto_box_SEALBYTES (48) + DATA_KEY_BYTES; envelope.ts checks this against libsodium. */
export const SEALED_KEY_BYTES = 80;
export const STANZA_BYTES = FINGERPRINT_BYTES + SEALED_KEY_BYTES;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const MAX_RECIPIENTS = 255;
export const MAX_PATH_BYTES = 0xffff;

/**
 * Coarse, non-secret reason codes, fit for logs and metric labels.
 * 'corrupt' covers tampered, truncated, and moved-to-another-path envelopes:
 * a failed tag cannot tell them apart, and the opener does not try to.
 * 'replayed' is the daemon's: a good envelope older than one it already applied.
 */
export type EnvelopeFailure = 'not-an-envelope' | 'unsupported-version' | 'not-a-recipient' | 'corrupt' | 'replayed';

/**
 * The one error for every failure to parse or open an envelope. The message is
 * generic on purpose: it never holds plaintext, key material, or the envelope.
 */
export class EnvelopeError extends Error {
  override name = 'EnvelopeError';
  constructor(
    readonly reason: EnvelopeFailure,
    options?: ErrorOptions,
  ) {
    super(`envelope cannot be opened (${reason})`, options);
  }
}

export interface Stanza {
  /** FINGERPRINT_BYTES of BLAKE2b-256 over the recipient's public key. */
  fingerprint: Uint8Array;
  /** SEALED_KEY_BYTES: crypto_box_seal of the data key. */
  sealedKey: Uint8Array;
}

export interface EnvelopeParts {
  stanzas: Stanza[];
  nonce: Uint8Array;
  /** AEAD output: ciphertext || tag. */
  sealed: Uint8Array;
}

export interface DecodedEnvelope extends EnvelopeParts {
  format: Format;
  /** V for v2 (authenticated only once the envelope opens); 0 for v1. */
  sealedVersion: number;
  /** body[0 .. S + H + 24]: the bytes the AD covers after the path. */
  header: Uint8Array;
}

/** Magic check only: true when the value claims to be an envelope of any version. */
export function isEnvelope(text: string | Uint8Array): boolean {
  return asText(text).startsWith(MAGIC);
}

/**
 * (V ||) count || stanzas || nonce: the part of the body that precedes the AEAD
 * output. With `sealedVersion` it is a v2 header, without it a v1 header (kept for tests
 * and for the interop check that v1 still opens).
 */
export function encodeHeader(stanzas: readonly Stanza[], nonce: Uint8Array, sealedVersion?: number): Uint8Array {
  if (stanzas.length < 1 || stanzas.length > MAX_RECIPIENTS) throw new RangeError('stanza count out of range');
  if (nonce.length !== NONCE_BYTES) throw new RangeError('bad nonce length');
  if (sealedVersion !== undefined && !(Number.isSafeInteger(sealedVersion) && sealedVersion >= 1)) throw new RangeError('sealed version out of range');
  const s = sealedVersion === undefined ? 0 : SEALED_VERSION_BYTES;
  const header = Buffer.alloc(s + 1 + STANZA_BYTES * stanzas.length + NONCE_BYTES);
  if (sealedVersion !== undefined) header.writeBigUInt64BE(BigInt(sealedVersion), 0);
  header[s] = stanzas.length;
  stanzas.forEach((st, i) => {
    if (st.fingerprint.length !== FINGERPRINT_BYTES || st.sealedKey.length !== SEALED_KEY_BYTES) {
      throw new RangeError('bad stanza length');
    }
    header.set(st.fingerprint, s + 1 + STANZA_BYTES * i);
    header.set(st.sealedKey, s + 1 + STANZA_BYTES * i + FINGERPRINT_BYTES);
  });
  header.set(nonce, header.length - NONCE_BYTES);
  return header;
}

/** AD = prefix || u16be(len P) || P || header. Throws EnvelopeError if P cannot be encoded. */
export function associatedData(header: Uint8Array, path: string, format: Format): Uint8Array {
  const prefix = Buffer.from(prefixOf(format), 'ascii');
  const p = Buffer.from(path, 'utf8');
  if (p.length > MAX_PATH_BYTES) throw new EnvelopeError('corrupt');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(p.length);
  return Buffer.concat([prefix, len, p, header]);
}

export function encodeEnvelope(header: Uint8Array, sealed: Uint8Array, format: Format): string {
  if (sealed.length < TAG_BYTES) throw new RangeError('AEAD output shorter than its tag');
  return prefixOf(format) + Buffer.concat([header, sealed]).toString('base64url');
}

/** Parses the text; every defect is an EnvelopeError with a coarse reason. */
export function decodeEnvelope(text: string | Uint8Array): DecodedEnvelope {
  const t = trimEnd(asText(text));
  if (!t.startsWith(MAGIC)) throw new EnvelopeError('not-an-envelope');
  const version = /^v([0-9]{1,6}):/.exec(t.slice(MAGIC.length));
  if (!version) throw new EnvelopeError('corrupt');
  const format = FORMATS.find((f) => version[0] === `v${f}:`);
  if (!format) throw new EnvelopeError('unsupported-version');
  const body = decodeBase64url(t.slice(prefixOf(format).length));

  const s = format === 1 ? 0 : SEALED_VERSION_BYTES;
  if (body.length < s + 1) throw new EnvelopeError('corrupt');
  const sealedVersion = s === 0 ? 0 : Number(body.readBigUInt64BE(0));
  if (s !== 0 && !(sealedVersion >= 1 && sealedVersion <= MAX_SEALED_VERSION)) throw new EnvelopeError('corrupt');
  const n = body[s] ?? 0;
  const headerLength = s + 1 + STANZA_BYTES * n + NONCE_BYTES;
  if (n === 0 || body.length < headerLength + TAG_BYTES) throw new EnvelopeError('corrupt');
  const stanzas: Stanza[] = [];
  for (let i = 0; i < n; i++) {
    const at = s + 1 + STANZA_BYTES * i;
    stanzas.push({
      fingerprint: body.subarray(at, at + FINGERPRINT_BYTES),
      sealedKey: body.subarray(at + FINGERPRINT_BYTES, at + STANZA_BYTES),
    });
  }
  return {
    format,
    sealedVersion,
    stanzas,
    nonce: body.subarray(headerLength - NONCE_BYTES, headerLength),
    sealed: body.subarray(headerLength),
    header: body.subarray(0, headerLength),
  };
}

// Buffer.from(s, 'base64url') silently skips bad characters and accepts padding;
// a strict decoder keeps text <-> bytes one-to-one.
function decodeBase64url(s: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) throw new EnvelopeError('corrupt');
  const bytes = Buffer.from(s, 'base64url');
  if (bytes.toString('base64url') !== s) throw new EnvelopeError('corrupt');
  return bytes;
}

// A loop, not /[ \t\r\n]+$/: that regex backtracks quadratically on a long
// whitespace run followed by anything else, and the text comes from etcd.
function trimEnd(s: string): string {
  let end = s.length;
  while (end > 0 && ' \t\r\n'.includes(s[end - 1]!)) end--;
  return s.slice(0, end);
}

function asText(value: string | Uint8Array): string {
  return typeof value === 'string' ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('latin1');
}
