/**
 * Bech32 (BIP-173, checksum constant 1), written from the specification, for the
 * text forms of keys in ./identity.ts. Only 32-byte payloads are accepted (the fixed
 * length also rules out Bech32's known insertion weakness).
 */

const KEY_BYTES = 32;

const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ v) >>> 0;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ GENERATOR[i]!) >>> 0;
  }
  return chk;
}

function hrpExpand(hrp: string): number[] {
  const codes = [...hrp].map((c) => c.charCodeAt(0));
  return [...codes.map((c) => c >>> 5), 0, ...codes.map((c) => c & 31)];
}

function toWords(bytes: Uint8Array): number[] {
  const words: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xfff;
    bits += 8;
    while (bits >= 5) words.push((acc >>> (bits -= 5)) & 31);
  }
  if (bits > 0) words.push((acc << (5 - bits)) & 31);
  return words;
}

function fromWords(words: number[]): Uint8Array | undefined {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const w of words) {
    acc = ((acc << 5) | w) & 0xfff;
    bits += 5;
    if (bits >= 8) out.push((acc >>> (bits -= 8)) & 0xff);
  }
  if (bits >= 5 || (acc & ((1 << bits) - 1)) !== 0) return undefined; // non-zero padding
  return Uint8Array.from(out);
}

export function bech32Encode(hrp: string, data: Uint8Array): string {
  const words = toWords(data);
  const mod = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return `${hrp}1${[...words, ...checksum].map((w) => CHARSET[w]).join('')}`;
}

/** Lower-cased hrp and a 32-byte payload, or a one-line reason. */
export function bech32Decode(text: string): { hrp: string; data: Uint8Array } | string {
  if (text !== text.toLowerCase() && text !== text.toUpperCase()) return 'mixed upper and lower case';
  const s = text.toLowerCase();
  const sep = s.lastIndexOf('1');
  if (sep < 1 || s.length - sep - 1 < 7) return 'not a Bech32 string';
  const hrp = s.slice(0, sep);
  const words = [...s.slice(sep + 1)].map((c) => CHARSET.indexOf(c));
  if (words.includes(-1)) return 'character outside the Bech32 alphabet';
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) return 'checksum mismatch (typo or truncated?)';
  const data = fromWords(words.slice(0, -6));
  if (!data || data.length !== KEY_BYTES) return 'wrong length: a key is 32 bytes';
  return { hrp, data };
}
