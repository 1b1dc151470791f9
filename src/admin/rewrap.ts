/**
 * rewrap: re-seal existing secrets to the current pinned recipient set of their
 * scope (rotation; adding or removing clusters or admins). Each write is guarded
 * by the value's mod revision, so a concurrent writer wins and the secret is
 * re-read and retried; readers never see a value they cannot open.
 */
import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3';
import { EnvelopeError, claimedVersion, envelopeRecipients, openVersioned, seal } from '../envelope/envelope.js';
import type { Keyring, Recipient } from '../envelope/identity.js';
import type { RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { prefixEnd } from '../source/etcd-client.js';
import { clusterError, clusterScope, printable, scopePath, type Keyspace, type Scope } from '../keyspace.js';

export interface RewrapJob {
  client: Etcd3;
  ks: Keyspace;
  scopes: Scope[];
  /** Only secrets of this namespace (and name). */
  under?: { namespace?: string; name?: string };
  pinned: RecipientsFile;
  keyring: Keyring;
  concurrency: number;
  /** A scope that cannot be rewrapped (printable text). */
  warn: (line: string) => void;
  /** Called once with the key count, then after every key. */
  progress: { start(total: number): void; tick(counts: Readonly<Record<Outcome, number>>): void };
}

/** What happened to one key. Only the first two leave a value sealed to the current set. */
export type Outcome = 'rewrapped' | 'unchanged' | 'not-a-recipient' | 'unopenable' | 'not-an-envelope' | 'invalid-key' | 'unpinned' | 'meta' | 'gone' | 'failed';

export const OUTCOME_NOTES: Record<Outcome, string> = {
  rewrapped: 're-sealed to the current recipients',
  unchanged: 'already sealed (format v2) to exactly the current recipients',
  'not-a-recipient': 'skipped: not openable with this identity, which is not among its recipients',
  unopenable: 'skipped: envelope cannot be opened, corrupt, tampered or moved; daemons refuse it too',
  'not-an-envelope': 'skipped: not an envelope, plaintext?; daemons refuse it too',
  'invalid-key': 'skipped: invalid key, daemons ignore it',
  unpinned: 'skipped: its cluster is not pinned in the recipients file',
  meta: '@meta keys, not secrets',
  gone: 'deleted by someone else while rewrapping',
  failed: 'failed (etcd error or kept changing)',
};

/** Outcomes that leave a live secret sealed to an old set: the run exits 1. */
export const LEFT_BEHIND: Outcome[] = ['not-a-recipient', 'unpinned', 'failed'];
const MAX_CONFLICT_RETRIES = 20;

export interface RewrapSummary {
  counts: Record<Outcome, number>;
  conflicts: number;
  /** The first 20 keys not rewrapped, `path: why`, printable. */
  notes: string[];
  done: number;
}

/**
 * Re-seals every secret under the selected scopes to `pinned.forScope(scope)`:
 *
 *  (1) count the keys (for progress), then page through each scope's range at head;
 *  (2) per key, `concurrency` in flight: parse the key; if the envelope is format v2
 *      and its stanza fingerprints already equal the target set, it is unchanged (no
 *      open needed); a v1 envelope is re-sealed even then, so it gains a sealed version;
 *  (3) open with the keyring, seal anew for the same logical path with a sealed version
 *      above the old one (daemons refuse a lower one as a replay), zero the plaintext;
 *  (4) write in a txn guarded by the mod revision we read: `if Mod == rev then put
 *      else get`. A lost race (someone wrote the key meanwhile) hands back the
 *      current value in the same round trip; go to (2) with it, counting a conflict.
 *      Readers see either the old envelope or the new one, both openable: no downtime.
 */
export async function rewrap(job: RewrapJob): Promise<RewrapSummary> {
  const { client, ks, keyring } = job;
  const targets = new Map<string, { recipients: Recipient[]; ids: Set<string> } | undefined>();
  for (const s of job.scopes) {
    try {
      const recipients = job.pinned.forScope(s);
      targets.set(scopePath(s), { recipients, ids: new Set(recipients.map((r) => r.id)) });
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      job.warn(`warning: ${printable(err.message)}; its secrets are skipped`);
      targets.set(scopePath(s), undefined);
    }
  }
  // (1)
  const ranges = job.scopes.map((s) => ks.kindPrefix(s, 'secrets', job.under?.namespace, job.under?.name));
  let total = 0;
  for (const r of ranges) total += await client.getAll().prefix(r).count();
  job.progress.start(total);

  const counts = Object.fromEntries(Object.keys(OUTCOME_NOTES).map((k) => [k, 0])) as Record<Outcome, number>;
  let conflicts = 0;
  let done = 0;
  const notes: string[] = [];
  const note = (rel: string, why: string) => {
    if (notes.length < 20) notes.push(`${printable(rel)}: ${printable(why)}`);
  };

  const one = async (kv: IKeyValue): Promise<Outcome> => {
    // (2)
    const rel = ks.relative(kv.key.toString());
    const parsed = ks.parse(kv.key.toString());
    if (parsed.type === 'meta') return 'meta';
    if (parsed.type !== 'data') {
      note(rel, parsed.type === 'invalid' ? parsed.reason : 'not a secret key');
      return 'invalid-key';
    }
    const target = targets.get(scopePath(parsed.scope));
    if (!target) {
      note(rel, 'cluster not pinned');
      return 'unpinned';
    }
    let { value, mod_revision: rev } = kv;
    for (let attempt = 0; ; attempt++) {
      const skip = (err: unknown): Outcome => {
        if (!(err instanceof EnvelopeError)) throw err;
        note(rel, err.reason);
        return err.reason === 'not-a-recipient' ? 'not-a-recipient' : err.reason === 'not-an-envelope' ? 'not-an-envelope' : 'unopenable';
      };
      let ids: string[];
      try {
        ids = envelopeRecipients(value);
      } catch (err) {
        return skip(err);
      }
      const sameSet = ids.length === target.ids.size && new Set(ids).size === ids.length && ids.every((id) => target.ids.has(id));
      if (sameSet && (claimedVersion(value) ?? 0) > 0) return 'unchanged';
      // (3)
      let opened: { plaintext: Buffer; version: number };
      try {
        opened = await openVersioned(value, parsed.logicalPath, keyring);
      } catch (err) {
        return skip(err);
      }
      let envelope: string;
      try {
        envelope = await seal(opened.plaintext, parsed.logicalPath, target.recipients, undefined, { after: opened.version });
      } finally {
        opened.plaintext.fill(0);
      }
      // (4)
      const res = await client.if(kv.key, 'Mod', '==', rev).then(client.put(kv.key).value(envelope)).else(client.get(kv.key)).commit();
      if (res.succeeded) return 'rewrapped';
      conflicts++;
      const current = res.responses[0]?.response_range?.kvs[0];
      if (!current) return 'gone';
      if (attempt >= MAX_CONFLICT_RETRIES) {
        note(rel, `changed ${attempt + 1} times while rewrapping; run rewrap again`);
        return 'failed';
      }
      ({ value, mod_revision: rev } = current);
    }
  };

  const items = kvsIn(client, ranges);
  const worker = async () => {
    for (let next = await items.next(); !next.done; next = await items.next()) {
      let outcome: Outcome;
      try {
        outcome = await one(next.value);
      } catch (err) {
        // etcd errors name no value; anything else is reported by its message only
        note(ks.relative(next.value.key.toString()), (err as Error).message);
        outcome = 'failed';
      }
      counts[outcome]++;
      done++;
      job.progress.tick(counts);
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  return { counts, conflicts, notes, done };
}

/**
 * Cluster names with any key under PREFIX/clusters/, by skip-scan: read one key,
 * then jump past everything under `clusters/<that name>/`. One request per cluster,
 * however many config keys each holds. Invalid names are reported through `warn`.
 */
export async function clusterScopes(client: Etcd3, ks: Keyspace, warn: (line: string) => void): Promise<Scope[]> {
  const base = ks.key('clusters/'); // every cluster scope: keyspace has no builder for this range
  const end = prefixEnd(Buffer.from(base));
  const out: Scope[] = [];
  let from: Buffer = Buffer.from(base);
  for (;;) {
    const [key] = await client.getAll().inRange({ start: from, end }).limit(1).keyBuffers();
    if (!key) return out;
    const rest = key.subarray(base.length).toString();
    const slash = rest.indexOf('/');
    if (slash < 0) {
      from = Buffer.concat([key, Buffer.from([0])]);
      continue;
    }
    const name = rest.slice(0, slash);
    const err = clusterError(name);
    if (err) warn(`skipping ${printable(`clusters/${name}/`)}: ${printable(err)}`);
    else out.push(clusterScope(name));
    from = prefixEnd(Buffer.from(ks.scopePrefix(clusterScope(name))));
  }
}

/** Every kv under the ranges, in key order, a page at a time with the next page prefetched. */
async function* kvsIn(client: Etcd3, ranges: string[], pageSize = 256): AsyncGenerator<IKeyValue> {
  for (const r of ranges) {
    const end = prefixEnd(Buffer.from(r));
    const page = (from: Buffer): Promise<IRangeResponse> => client.getAll().inRange({ start: from, end }).limit(pageSize).exec();
    let pending: Promise<IRangeResponse> | undefined = page(Buffer.from(r));
    while (pending) {
      const res: IRangeResponse = await pending;
      const last = res.kvs[res.kvs.length - 1];
      pending = res.more && last ? page(Buffer.concat([last.key, Buffer.from([0])])) : undefined;
      yield* res.kvs;
    }
  }
}
