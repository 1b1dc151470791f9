/**
 * Sealing and opening secret envelopes. The CLI's `seal`, `secret set`, `rewrap`
 * and the daemon's open path all go through this module; writers need only
 * public recipients, openers a Keyring.
 */
import sodium from 'libsodium-wrappers';
import { randomBytes } from 'node:crypto';
import { UserError } from '../errors.js';
import {
  DATA_KEY_BYTES,
  EnvelopeError,
  FORMAT,
  MAX_SEALED_VERSION,
  MAX_PATH_BYTES,
  MAX_RECIPIENTS,
  NONCE_BYTES,
  SEALED_KEY_BYTES,
  associatedData,
  decodeEnvelope,
  encodeEnvelope,
  encodeHeader,
  type Stanza,
} from './format.js';
import { fingerprintBytes, type Keyring, type Recipient } from './identity.js';

export { EnvelopeError, isEnvelope, type EnvelopeFailure } from './format.js';

export interface SealOptions {
  /**
   * The sealed version of the value this one replaces, if any: the new version is
   * max(now, after + 1), so a writer that reads before it writes (rewrap,
   * rollback) always moves a path forward even when its clock is behind the last
   * writer's. Taken from an unopened envelope it is only a floor, never trusted.
   */
  after?: number;
  /** The clock (ms since the epoch); inject for tests. */
  now?: () => number;
}

await sodium.ready;

// format.ts hard-codes the stanza size; fail at import, not at the first open, if
// a libsodium build ever disagrees.
if (SEALED_KEY_BYTES !== sodium.crypto_box_SEALBYTES + DATA_KEY_BYTES) {
  throw new Error('libsodium crypto_box_SEALBYTES does not match the envelope format');
}

/** `<scope>/secrets/<namespace>/<name>/<key>`; finer rules (DNS labels, key charset) belong to the key-layout parser. */
const SECRET_PATH = /^(global|clusters\/[^/]+)\/secrets\/[^/]+\/[^/]+\/[^/]+$/;

/**
 * Seals `plaintext` for `recipients`, bound to the logical `path`.
 *
 *     text  = "confsync:v2:" || base64url-nopad(body)
 *     body  = V(8) || N(1) || N × [ fingerprint(8) || crypto_box_seal(data_key, pk)(80) ]
 *                  || nonce(24) || XChaCha20-Poly1305-IETF(plaintext, AD, nonce, data_key)(L+16)
 *     AD    = "confsync:v2:" || u16be(len path) || path(UTF-8) || body[0 .. 8 + 1 + 88N + 24]
 *     V     = u64be sealed version: ms since the epoch, see SealOptions
 *     fingerprint = BLAKE2b-256(pk)[0..8]
 *
 * (Full layout and rules: format.ts and docs/envelope-format.md.)
 *
 * `rng` supplies the data key (first call, 32 bytes) and the nonce (second call,
 * 24 bytes); inject it for reproducible tests. seal owns what rng returns: the
 * data key is zeroed in place, so return fresh arrays. crypto_box_seal draws its own
 * ephemeral key pair from libsodium, so the sealed keys, and with them the tag
 * (the AD covers the stanzas), differ on every call even with a fixed rng; the
 * count, fingerprints, nonce and ciphertext bytes before the tag do not.
 *
 * Duplicate recipients are sealed once. Caller mistakes (bad path, no or too many
 * recipients) are UserErrors. The data key is zeroed before returning.
 */
export async function seal(
  plaintext: Uint8Array,
  path: string,
  recipients: readonly Recipient[],
  rng: (n: number) => Uint8Array = randomBytes,
  options: SealOptions = {},
): Promise<string> {
  if (!SECRET_PATH.test(path) || Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new UserError(`invalid secret path ${JSON.stringify(path.slice(0, 200))}: expected <scope>/secrets/<namespace>/<name>/<key>, scope "global" or "clusters/<name>", no leading "/" or prefix`);
  }
  const unique = new Map<string, Uint8Array>();
  for (const r of recipients) {
    if (r.publicKey.length !== 32) throw new UserError('invalid recipient: public key must be 32 bytes');
    unique.set(Buffer.from(r.publicKey).toString('hex'), r.publicKey);
  }
  if (unique.size === 0) throw new UserError('at least one recipient is required to seal a secret');
  if (unique.size > MAX_RECIPIENTS) throw new UserError(`at most ${MAX_RECIPIENTS} recipients per envelope`);
  const version = Math.max(Math.floor((options.now ?? Date.now)()), (options.after ?? 0) + 1);
  if (!(version <= MAX_SEALED_VERSION)) throw new UserError('cannot seal: the value it replaces has the largest possible sealed version');

  const dataKey = draw(rng, DATA_KEY_BYTES);
  try {
    const nonce = draw(rng, NONCE_BYTES);
    const stanzas: Stanza[] = [...unique.values()].map((pk) => ({
      fingerprint: fingerprintBytes(pk),
      sealedKey: sodium.crypto_box_seal(dataKey, pk),
    }));
    const header = encodeHeader(stanzas, nonce, version);
    const sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associatedData(header, path, FORMAT), null, nonce, dataKey);
    return encodeEnvelope(header, sealed, FORMAT);
  } finally {
    sodium.memzero(dataKey);
  }
}

/**
 * Opens an envelope stored at logical `path` with any key of `keyring`: every
 * (stanza, key) pair whose fingerprints match is tried in order until one yields
 * a data key that authenticates the payload.
 *
 * Every failure is an EnvelopeError with the generic message and a coarse reason:
 * 'not-an-envelope' (no magic), 'unsupported-version', 'not-a-recipient' (no
 * stanza for any key here), 'corrupt' (bad encoding, truncated, tampered, or
 * moved to another path). libsodium's own errors are deliberately not attached
 * as `cause`: the caller learns nothing beyond the reason code.
 *
 * The returned Buffer is the only plaintext copy we keep; the caller owns it.
 */
export async function open(envelopeText: string | Uint8Array, path: string, keyring: Keyring): Promise<Buffer> {
  return (await openVersioned(envelopeText, path, keyring)).plaintext;
}

/** open(), plus the sealed version (0 for v1), authenticated by the same tag as the plaintext. */
export async function openVersioned(envelopeText: string | Uint8Array, path: string, keyring: Keyring): Promise<{ plaintext: Buffer; version: number }> {
  const envelope = decodeEnvelope(envelopeText);
  const ad = associatedData(envelope.header, path, envelope.format);
  let candidates = 0;
  for (const stanza of envelope.stanzas) {
    for (const identity of keyring.keysFor(stanza.fingerprint)) {
      candidates++;
      let dataKey: Uint8Array | undefined;
      try {
        dataKey = sodium.crypto_box_seal_open(stanza.sealedKey, identity.publicKey, identity.privateKey);
        const plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, envelope.sealed, ad, envelope.nonce, dataKey);
        return { plaintext: Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength), version: envelope.sealedVersion };
      } catch {
        // wrong key for this stanza, or a bad tag: try the next candidate
      } finally {
        if (dataKey) sodium.memzero(dataKey);
      }
    }
  }
  throw new EnvelopeError(candidates === 0 ? 'not-a-recipient' : 'corrupt');
}

/** Recipient fingerprints (hex ids, stanza order) without opening; EnvelopeError if unparseable. */
export function envelopeRecipients(envelopeText: string | Uint8Array): string[] {
  return decodeEnvelope(envelopeText).stanzas.map((s) => Buffer.from(s.fingerprint).toString('hex'));
}

/**
 * The sealed version an envelope claims (0 for v1) WITHOUT opening it, so NOT
 * authenticated: fit only as a floor for SealOptions.after. Undefined if unparseable.
 */
export function claimedVersion(envelopeText: string | Uint8Array): number | undefined {
  try {
    return decodeEnvelope(envelopeText).sealedVersion;
  } catch (err) {
    if (err instanceof EnvelopeError) return undefined;
    throw err;
  }
}

function draw(rng: (n: number) => Uint8Array, n: number): Uint8Array {
  const bytes = rng(n);
  if (bytes.length !== n) throw new RangeError(`rng returned ${bytes.length} bytes, wanted ${n}`);
  return bytes;
}
