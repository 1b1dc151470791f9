/**
 * `recipients pull`'s library half: read the keys clusters registered under
 * PREFIX/recipients/, compare them with the pinned file, decide what may be pinned.
 */
import type { Etcd3 } from 'etcd3';
import { parseRecipient, type Recipient } from '../envelope/identity.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { printable, type Keyspace } from '../keyspace.js';

export interface Registration {
  cluster: string;
  registered: Recipient;
  /** The pinned key, when the cluster is pinned. */
  pinned?: Recipient;
  state: 'new' | 'pinned' | 'changed';
}

export interface Registrations {
  list: Registration[];
  /** Keys under recipients/ that are not a valid registration: `<key>: <why>`, printable. */
  skipped: string[];
  /** How many keys were under recipients/ at all. */
  seen: number;
}

/** Every registration under PREFIX/recipients/, each compared with the pinned file. */
export async function readRegistrations(client: Etcd3, ks: Keyspace, pinned: RecipientsFile): Promise<Registrations> {
  const kvs = (await client.getAll().prefix(ks.recipientsPrefix()).exec()).kvs;
  const list: Registration[] = [];
  const skipped: string[] = [];
  for (const kv of kvs) {
    const rel = ks.relative(kv.key.toString());
    const parsed = ks.parse(kv.key.toString());
    if (parsed.type !== 'recipient') {
      skipped.push(`${printable(rel)}: ${parsed.type === 'invalid' ? parsed.reason : 'not a recipient key'}`);
      continue;
    }
    let registered: Recipient;
    try {
      registered = parseRecipient(kv.value.toString());
    } catch (err) {
      skipped.push(`${printable(rel)}: ${printable((err as Error).message)}`);
      continue;
    }
    const current = pinned.clusters.get(parsed.cluster);
    const state = !current ? 'new' : current.id === registered.id && current.text === registered.text ? 'pinned' : 'changed';
    list.push({ cluster: parsed.cluster, registered, pinned: current, state });
  }
  return { list, skipped, seen: kvs.length };
}
