/**
 * `recipients pull`'s library half: read the keys clusters registered under
 * PREFIX/recipients/, compare them with the pinned file, decide what may be pinned.
 */
import type { Etcd3 } from 'etcd3';
import { parseRecipient, type Recipient } from '../envelope/identity.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { clusterError, printable, type Keyspace } from '../keyspace.js';

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

/** `--accept CLUSTER=FINGERPRINT` values → cluster → fingerprint. Malformed ones are one-line UserErrors. */
export function parseAccepts(values: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of values) {
    const eq = v.indexOf('=');
    const cluster = eq < 0 ? v : v.slice(0, eq);
    const fingerprint = eq < 0 ? '' : v.slice(eq + 1);
    const shown = printable(v.slice(0, 100));
    if (eq < 0 || clusterError(cluster)) throw new UserError(`--accept ${shown}: expected CLUSTER=FINGERPRINT with CLUSTER a DNS-1123 label`);
    if (!FINGERPRINT.test(fingerprint)) throw new UserError(`--accept ${shown}: the fingerprint is 16 lower-case hex digits, as \`recipients pull\` and keygen show it`);
    if (out.has(cluster) && out.get(cluster) !== fingerprint) throw new UserError(`--accept: cluster ${cluster} given twice with different fingerprints`);
    out.set(cluster, fingerprint);
  }
  return out;
}

const FINGERPRINT = /^[0-9a-f]{16}$/;

export interface PullPlan {
  /** New or changed registrations the operator accepted by fingerprint. */
  accepted: Registration[];
  /** New clusters not accepted by fingerprint: pinned only after --yes or a confirmation. */
  unconfirmedNew: Registration[];
  /** Changed keys not accepted: never pinned; the pull fails while any is left. */
  unacceptedChanged: Registration[];
}

/**
 * What a pull may pin. A changed key is an attack until shown otherwise, so it is
 * pinned only when its cluster is named with exactly the registered fingerprint;
 * there is no blanket flag:
 *
 *  (1) every --accept must match a registration: its cluster registered, with the
 *      named fingerprint (else nothing at all is pinned: what the operator compared
 *      is not what is in etcd now);
 *  (2) new and changed registrations named by (1) are accepted;
 *  (3) the other changed ones are left unaccepted; the other new ones wait for
 *      --yes or the prompt.
 */
export function planPull(ks: Keyspace, list: readonly Registration[], accepts: ReadonlyMap<string, string>): PullPlan {
  // (1)
  for (const [cluster, fingerprint] of accepts) {
    const r = list.find((x) => x.cluster === cluster);
    if (!r) throw new UserError(`--accept ${cluster}=${fingerprint}: no key is registered for cluster ${cluster} at ${ks.recipientKey(cluster)}; nothing pinned`);
    if (r.registered.id !== fingerprint) {
      throw new UserError(`--accept ${cluster}=${fingerprint}: cluster ${cluster} registers key ${r.registered.id}, not ${fingerprint}; nothing pinned. Find out why before accepting anything`);
    }
  }
  // (2), (3)
  const accepted = list.filter((r) => r.state !== 'pinned' && accepts.has(r.cluster));
  return {
    accepted,
    unconfirmedNew: list.filter((r) => r.state === 'new' && !accepts.has(r.cluster)),
    unacceptedChanged: list.filter((r) => r.state === 'changed' && !accepts.has(r.cluster)),
  };
}
