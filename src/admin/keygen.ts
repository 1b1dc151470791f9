/**
 * keygen's library half: create an identity file (or add a key to one) and,
 * optionally, publish its recipient at PREFIX/recipients/<cluster>.
 */
import type { Etcd3 } from 'etcd3';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { generateIdentity, loadKeyring, parseRecipient, recipientOf, writeIdentityFile, type Identity, type Keyring, type Recipient } from '../envelope/identity.js';
import { OperationFailed, UserError } from '../errors.js';
import type { Keyspace } from '../keyspace.js';

export interface KeygenOptions {
  out: string;
  /** Replace an existing file; with `register`, also a different registered key. */
  force?: boolean;
  /** Add a key to an existing file (rotation). */
  add?: boolean;
  /** Create the missing parent directories of `out` (0700); without it a missing one is refused. */
  mkdir?: boolean;
  register?: { client: Etcd3; ks: Keyspace; cluster: string };
  /** Progress lines for the operator (stderr in the CLI). */
  notice: (line: string) => void;
}

/**
 * (1) read the current registration first, so a refusal leaves no new file behind;
 * (2) generate the key and write the file (new, replaced, or one key added), 0600;
 * (3) publish the recipient in a txn guarded by the registration seen in (1): two
 *     concurrent keygens for one cluster cannot both win.
 */
export async function createIdentity(opts: KeygenOptions): Promise<Recipient> {
  if (opts.add && opts.force) throw new UserError('--add keeps the existing keys and --force replaces them: choose one');
  // A typo in --out (`/etc/confsnyc/id.key`) must not quietly create a tree: refuse before any work.
  const dir = dirname(opts.out);
  const missingDir = !existsSync(dir);
  if (missingDir && !opts.mkdir) throw new UserError(`--out ${opts.out}: directory ${dir} does not exist (create it, or pass --mkdir to create it with mode 0700)`);
  const reg = opts.register;
  const regKey = reg?.ks.recipientKey(reg.cluster);
  // (1)
  const existing = reg && regKey ? (await reg.client.get(regKey).exec()).kvs[0] : undefined;
  let previous: Recipient | undefined;
  if (existing) {
    try {
      previous = parseRecipient(existing.value.toString());
    } catch {
      previous = undefined; // garbage registration: replacing it is fine
    }
    if (previous && !opts.force && !opts.add) {
      throw new UserError(`${regKey} already holds key ${previous.id}; use --add to rotate (keep the old key in the file) or --force to replace the registration`);
    }
  }

  // (2)
  const identity = generateIdentity();
  const recipient = recipientOf(identity.publicKey);
  try {
    if (opts.add) {
      const keyring = await loadKeyring(opts.out).catch((err: Error) => {
        throw new UserError(`--add: ${err.message}`);
      });
      try {
        await writeIdentityFile(opts.out, [...identitiesOf(keyring), identity], { overwrite: true });
        opts.notice(`added key ${recipient.id} to ${opts.out} (now ${keyring.size + 1} keys, mode 0600)`);
      } finally {
        keyring.dispose();
      }
    } else {
      await writeIdentityFile(opts.out, identity, { overwrite: !!opts.force });
      if (missingDir) opts.notice(`created directory ${dir} (mode 0700)`);
      opts.notice(`wrote identity ${recipient.id} to ${opts.out} (mode 0600)`);
    }
  } finally {
    identity.privateKey.fill(0);
  }

  // (3)
  if (reg && regKey) {
    const { client } = reg;
    const cmp = existing ? client.if(regKey, 'Mod', '==', existing.mod_revision) : client.if(regKey, 'Create', '==', 0);
    const res = await cmp.then(client.put(regKey).value(recipient.text)).commit();
    if (!res.succeeded) throw new OperationFailed(`${regKey} changed while registering; the identity file was written, re-run with --register only after checking it`);
    opts.notice(`registered at ${regKey}${previous ? ` (replaced ${previous.id})` : ''}`);
  }
  return recipient;
}

/** Keys of a keyring as identities again (for rewriting the file with one more key). */
function identitiesOf(keyring: Keyring): Identity[] {
  const seen = new Map<string, Identity>();
  for (const r of keyring.recipients()) {
    const id = keyring.keysFor(Buffer.from(r.id, 'hex')).find((i) => Buffer.compare(i.publicKey, r.publicKey) === 0);
    if (id) seen.set(Buffer.from(id.publicKey).toString('hex'), id);
  }
  return [...seen.values()];
}
