/**
 * The secret verbs' library half: seal + put, get + open, and the listing of who
 * can open each key. Values only pass through; errors name paths and
 * fingerprints, never a value or a key.
 */
import type { Etcd3 } from 'etcd3';
import { EnvelopeError, envelopeRecipients, open, seal } from '../envelope/envelope.js';
import type { Keyring, Recipient } from '../envelope/identity.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import type { Keyspace } from '../keyspace.js';

export function describeRecipients(list: readonly Recipient[], pinned: RecipientsFile | undefined): string {
  return list.map((r) => pinned?.describe(r.id) ?? r.id).join(', ');
}

/** Seals `plaintext` for `key` (bound to its logical path) and puts it; zeroes the plaintext. Returns the revision. */
export async function sealAndPut(client: Etcd3, ks: Keyspace, key: string, plaintext: Buffer, recipients: Recipient[]): Promise<string> {
  let envelope: string;
  try {
    envelope = await seal(plaintext, ks.relative(key), recipients);
  } finally {
    plaintext.fill(0);
  }
  const res = await client.put(key).value(envelope).exec();
  return res.header.revision;
}

/** Gets `key` and opens it with the keyring; a refusal is a UserError naming the path (and fingerprints). */
export async function getAndOpen(client: Etcd3, ks: Keyspace, key: string, keyring: Keyring): Promise<Buffer> {
  const value = await client.get(key).buffer();
  if (value === null) throw new UserError(`${key}: not found`);
  const logical = ks.relative(key);
  try {
    return await open(value, logical, keyring);
  } catch (err) {
    if (!(err instanceof EnvelopeError)) throw err;
    const to = err.reason === 'not-a-recipient' ? `; sealed to ${envelopeRecipients(value).join(', ')}, this identity holds ${keyring.recipients().map((r) => r.id).join(', ')}` : '';
    throw new UserError(`${logical}: ${err.message}${to}`);
  }
}

export interface SecretRow {
  /** Key relative to the prefix (raw: print it through `printable`). */
  path: string;
  bytes: number;
  revision: string;
  who: string;
}

/** One row per key under `base`: size, revision and who can open it (never the value). */
export async function listSecrets(client: Etcd3, ks: Keyspace, base: string, pinned: RecipientsFile | undefined): Promise<SecretRow[]> {
  const res = await client.getAll().prefix(base).exec();
  return res.kvs.map((kv) => {
    const rel = ks.relative(kv.key.toString());
    const parsed = ks.parse(kv.key.toString());
    let who: string;
    if (parsed.type === 'invalid') who = `invalid key (skipped by daemons): ${parsed.reason}`;
    else if (parsed.type === 'meta') who = '@meta';
    else {
      try {
        who = `sealed to ${envelopeRecipients(kv.value).map((id) => pinned?.describe(id) ?? id).join(', ')}`;
      } catch (err) {
        who = `NOT OPENABLE (${(err as EnvelopeError).reason ?? 'corrupt'}): daemons keep the last good value`;
      }
    }
    return { path: rel, bytes: kv.value.length, revision: kv.mod_revision, who };
  });
}
