/**
 * Seals by hand from the format primitives, for tests: a v1 envelope (no sealed
 * version) as the pre-v2 code wrote it, or a v2 one with a raw 8-byte version
 * that seal() would never write.
 */
import sodium from 'libsodium-wrappers';
import { associatedData, encodeEnvelope, encodeHeader, type Format } from '../../src/envelope/format.js';
import { fingerprintBytes } from '../../src/envelope/identity.js';

await sodium.ready;

export function sealRaw(plaintext: Uint8Array, path: string, pk: Uint8Array, format: Format, rawVersion?: Buffer): string {
  const dataKey = sodium.randombytes_buf(32);
  const nonce = sodium.randombytes_buf(24);
  let header = encodeHeader([{ fingerprint: fingerprintBytes(pk), sealedKey: sodium.crypto_box_seal(dataKey, pk) }], nonce);
  if (format === 2) header = Buffer.concat([rawVersion ?? Buffer.alloc(8), header]);
  const sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associatedData(header, path, format), null, nonce, dataKey);
  return encodeEnvelope(header, sealed, format);
}
