/**
 * Identities (X25519 key pairs), their printable recipient strings, and the
 * keyring a daemon opens envelopes with.
 *
 * TEXT FORMS (Bech32, BIP-173, checksum constant 1; 32-byte payload only):
 *
 *     recipient   confsync1<52 data chars><6 checksum chars>          lower case, 67 chars
 *     secret key  CONFSYNC-SECRET-KEY-1<52 data chars><6 checksum>     upper case, 79 chars
 *
 *   The data part is the 32-byte key regrouped into 5-bit words (big-endian bit
 *   order, last word zero-padded). Decoders accept all-lower or all-upper case and
 *   reject mixed case, a bad checksum, or a payload that is not exactly 32 bytes
 *   (the fixed length also rules out Bech32's known insertion weakness).
 *
 * IDENTITY FILE: UTF-8 text, mode 0600 (0400 also accepted), owned by the user that loads it. One secret key per line (several keys =
 * rotation: the daemon opens envelopes sealed to any of them). Blank lines and
 * lines starting with '#' are ignored; keygen writes the public recipient as a
 * comment above each key.
 *
 * FINGERPRINT: BLAKE2b-256 (crypto_generichash, no key) of the 32-byte public
 * key, first 8 bytes, shown as 16 lower-case hex digits. It names a recipient in
 * envelope stanzas; it is an id, not a security boundary (a colliding stanza just
 * fails to open and the next candidate is tried).
 */
import sodium from 'libsodium-wrappers';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { UserError } from '../errors.js';
import { bech32Decode, bech32Encode } from './bech32.js';
import { FINGERPRINT_BYTES } from './format.js';

await sodium.ready;

export const RECIPIENT_HRP = 'confsync';
export const SECRET_KEY_HRP = 'confsync-secret-key-';
const KEY_BYTES = 32;

export interface Identity {
  readonly publicKey: Uint8Array;
  readonly privateKey: Uint8Array;
}

export interface Recipient {
  readonly publicKey: Uint8Array;
  /** fingerprint(publicKey): the id envelopes carry. */
  readonly id: string;
  /** The printable form, `confsync1…`. */
  readonly text: string;
}

/** New X25519 identity. `rng` is injectable for tests; any 32 bytes are a valid X25519 secret. */
export function generateIdentity(rng: (n: number) => Uint8Array = randomBytes): Identity {
  const privateKey = rng(KEY_BYTES);
  if (privateKey.length !== KEY_BYTES) throw new RangeError('rng returned the wrong length');
  return { privateKey, publicKey: sodium.crypto_scalarmult_base(privateKey) };
}

export function fingerprintBytes(publicKey: Uint8Array): Uint8Array {
  return sodium.crypto_generichash(32, publicKey, null).subarray(0, FINGERPRINT_BYTES);
}

/** Short stable id of a public key: 16 hex digits. */
export function fingerprint(publicKey: Uint8Array): string {
  return Buffer.from(fingerprintBytes(publicKey)).toString('hex');
}

export function recipientOf(publicKey: Uint8Array): Recipient {
  if (publicKey.length !== KEY_BYTES) throw new RangeError('public key must be 32 bytes');
  return { publicKey, id: fingerprint(publicKey), text: bech32Encode(RECIPIENT_HRP, publicKey) };
}

/** Parses `confsync1…` (surrounding whitespace allowed). Errors are one line and never echo the input. */
export function parseRecipient(text: string): Recipient {
  const s = text.trim();
  if (s.toLowerCase().startsWith(SECRET_KEY_HRP + '1')) {
    throw new UserError('invalid recipient: this is a SECRET key; pass the public "confsync1…" recipient instead');
  }
  const decoded = bech32Decode(s);
  if (typeof decoded === 'string') throw new UserError(`invalid recipient: ${decoded}`);
  if (decoded.hrp !== RECIPIENT_HRP) throw new UserError('invalid recipient: expected a string starting with "confsync1"');
  return recipientOf(decoded.data);
}

export function formatSecretKey(privateKey: Uint8Array): string {
  return bech32Encode(SECRET_KEY_HRP, privateKey).toUpperCase();
}

/** The private keys one daemon may open envelopes with, indexed by fingerprint. */
export class Keyring {
  readonly #byFingerprint = new Map<string, Identity[]>();
  readonly #identities: Identity[];

  constructor(identities: readonly Identity[]) {
    this.#identities = [...identities];
    for (const identity of this.#identities) {
      const id = fingerprint(identity.publicKey);
      this.#byFingerprint.set(id, [...(this.#byFingerprint.get(id) ?? []), identity]);
    }
  }

  get size(): number {
    return this.#identities.length;
  }

  /** Public recipients of every key, in file order. */
  recipients(): Recipient[] {
    return this.#identities.map((i) => recipientOf(i.publicKey));
  }

  /** Keys whose fingerprint matches (normally zero or one). */
  keysFor(fp: Uint8Array): readonly Identity[] {
    return this.#byFingerprint.get(Buffer.from(fp).toString('hex')) ?? [];
  }

  /** Copies of every key pair, for a keyring in a worker thread (envelope/open-pool.ts); the caller zeroes them. */
  copies(): Identity[] {
    return this.#identities.map((i) => ({ publicKey: Uint8Array.from(i.publicKey), privateKey: Uint8Array.from(i.privateKey) }));
  }

  /** Zeroes the private keys; the keyring opens nothing afterwards. */
  dispose(): void {
    for (const identity of this.#identities) sodium.memzero(identity.privateKey);
    this.#byFingerprint.clear();
    this.#identities.length = 0;
  }
}

/**
 * Writes an identity file, mode 0600, atomically: a temp file in the same
 * directory is written and fsynced, then linked into place (refused with
 * EEXIST unless `overwrite`) or renamed over the old file (`overwrite`).
 * A crash never leaves a half-written identity at `path`.
 */
export async function writeIdentityFile(
  path: string,
  identities: Identity | readonly Identity[],
  options: { overwrite?: boolean } = {},
): Promise<void> {
  const list = Array.isArray(identities) ? identities : [identities as Identity];
  if (list.length === 0) throw new UserError(`identity file ${path}: no keys to write`);
  const lines = [`# confsync identity, created ${new Date().toISOString()}`];
  for (const id of list) lines.push(`# recipient: ${recipientOf(id.publicKey).text}`, formatSecretKey(id.privateKey));
  const content = Buffer.from(lines.join('\n') + '\n', 'utf8');

  const dir = dirname(path);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await fs.open(tmp, 'wx', 0o600);
  try {
    await fh.chmod(0o600); // umask can only narrow the mode, but be explicit
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
    content.fill(0);
  }
  try {
    if (options.overwrite) {
      await fs.rename(tmp, path);
    } else {
      await fs.link(tmp, path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new UserError(`identity file ${path} already exists; refusing to overwrite it`);
        throw err;
      });
    }
  } finally {
    await fs.rm(tmp, { force: true });
  }
  const d = await fs.open(dir, 'r');
  await d.sync().finally(() => d.close());
}

/**
 * Loads every key of an identity file. As ssh does for private keys, refuses a file
 * that another user could read or replace:
 *
 *  (1) open, then fstat the open file (no check/use race);
 *  (2) it must be a regular file with no group or other permission bit at all (0600
 *      or 0400), whatever its group: a group-readable key is readable by everyone in
 *      that group, daemon or not;
 *  (3) it must be owned by this process's effective uid. (As root that means owned
 *      by root: root can open anyone's file, but a key another user owns is one they
 *      can replace.)
 *
 * Errors are one-line UserErrors naming the file, what was found and the fix; parse
 * errors name the line, never its content.
 */
export async function loadKeyring(path: string): Promise<Keyring> {
  let raw: Buffer;
  // (1)
  const fh = await fs.open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new UserError(`identity file ${path}: cannot open (${err.code ?? err.message})`, { cause: err });
  });
  try {
    const st = await fh.stat();
    // (2)
    if (!st.isFile()) throw new UserError(`identity file ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const octal = (st.mode & 0o7777).toString(8).padStart(4, '0');
      throw new UserError(`identity file ${path} has mode ${octal}: group/other permission bits are not allowed on a private key; run: chmod 600 ${path}`);
    }
    // (3)
    const euid = process.geteuid?.();
    if (euid !== undefined && st.uid !== euid) {
      throw new UserError(`identity file ${path} is owned by uid ${st.uid}, not by this process (uid ${euid}): another user could replace the key; run confsync as uid ${st.uid}, or: chown ${euid} ${path}`);
    }
    raw = await fh.readFile();
  } finally {
    await fh.close();
  }
  const identities: Identity[] = [];
  try {
    const lines = raw.toString('utf8').split('\n');
    lines.forEach((line, i) => {
      const s = line.trim();
      if (s === '' || s.startsWith('#')) return;
      const decoded = bech32Decode(s);
      if (typeof decoded === 'string' || decoded.hrp !== SECRET_KEY_HRP) {
        const why = typeof decoded === 'string' ? decoded : 'not a CONFSYNC-SECRET-KEY-1… line';
        throw new UserError(`identity file ${path} line ${i + 1}: ${why}`);
      }
      identities.push({ privateKey: decoded.data, publicKey: sodium.crypto_scalarmult_base(decoded.data) });
    });
  } finally {
    raw.fill(0); // the decoded string copy cannot be wiped; JS strings are immutable
  }
  if (identities.length === 0) throw new UserError(`identity file ${path} holds no keys`);
  return new Keyring(identities);
}
