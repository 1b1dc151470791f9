/**
 * `confsync rollback`'s library half: an object's keys as they were at revision R
 * versus now (the plan), and the one guarded transaction that writes R back.
 * Secrets are never copied back as they were: an old envelope would open (it is
 * bound to its path, not to a time), but daemons refuse an older sealed version,
 * so each old value is opened and sealed afresh to the scope's pinned recipients.
 */
import { GRPCOutOfRangeError, type Etcd3, type ICompare, type IKeyValue, type IRequestOp } from 'etcd3';
import { EnvelopeError, open, openVersioned, seal } from '../envelope/envelope.js';
import type { Keyring, Recipient } from '../envelope/identity.js';
import { OperationFailed, UserError } from '../errors.js';
import { isSealed, printable, type Keyspace, type ObjectRef, type Scope } from '../keyspace.js';
import { objectRange, rawClients } from './history.js';

/** etcd's default --max-txn-ops: more compares or operations in one txn are refused. */
export const MAX_TXN_OPS = 128;

export interface PlannedPut {
  /** The full etcd key. */
  key: string;
  /** The value at R (for a sealed key: the old envelope, re-sealed before writing). */
  value: Buffer;
  /** The value now; undefined when the key does not exist now. */
  current?: Buffer;
}

export interface RollbackPlan {
  scope: Scope;
  ref: ObjectRef;
  toRevision: number;
  /** The head the plan was read at: the transaction fails if anything in the object changed after it. */
  head: number;
  puts: PlannedPut[];
  deletes: { key: string; current: Buffer }[];
  /** Every key of the object now with its mod revision: the per-key guards. */
  guards: { key: string; mod: string }[];
}

/**
 * The plan:
 *  (1) read the object at head H (values and mod revisions: the guards);
 *  (2) read it at R; a compacted R is a one-line refusal;
 *  (3) puts = keys at R whose bytes differ now (or are gone), deletes = keys now
 *      that did not exist at R; unchanged keys are left alone;
 *  (4) refuse a plan that etcd would refuse: over MAX_TXN_OPS compares or operations.
 */
export async function planRollback(client: Etcd3, ks: Keyspace, scope: Scope, ref: ObjectRef, toRevision: number): Promise<RollbackPlan> {
  const { kv } = rawClients(client);
  const range = objectRange(ks, scope, ref);
  const where = printable(ks.relative(range.key.toString()));
  // (1)
  const now = await kv.range({ key: range.key, range_end: range.end });
  const head = Number(now.header.revision);
  if (!Number.isSafeInteger(toRevision) || toRevision < 1 || toRevision > head) throw new UserError(`--to-revision ${toRevision}: must be between 1 and etcd's head revision ${head}`);
  // (2)
  let then: IKeyValue[];
  try {
    then = (await kv.range({ key: range.key, range_end: range.end, revision: toRevision })).kvs;
  } catch (err) {
    if (err instanceof GRPCOutOfRangeError) throw new UserError(`--to-revision ${toRevision}: etcd has compacted that revision; \`confsync history\` shows the oldest one still kept`);
    throw err;
  }
  // (3)
  const current = new Map(now.kvs.map((k) => [k.key.toString('latin1'), k]));
  const old = new Map(then.map((k) => [k.key.toString('latin1'), k]));
  const puts: PlannedPut[] = [];
  for (const [k, o] of old) {
    const c = current.get(k);
    if (!c || !c.value.equals(o.value)) puts.push({ key: o.key.toString(), value: o.value, current: c?.value });
  }
  const deletes = now.kvs.filter((c) => !old.has(c.key.toString('latin1'))).map((c) => ({ key: c.key.toString(), current: c.value }));
  const guards = now.kvs.map((c) => ({ key: c.key.toString(), mod: c.mod_revision }));
  // (4)
  const ops = puts.length + deletes.length;
  if (ops > MAX_TXN_OPS || guards.length + 1 > MAX_TXN_OPS) {
    throw new UserError(`${where}: rollback needs ${ops} writes and ${guards.length + 1} guards in one transaction; etcd allows ${MAX_TXN_OPS} (--max-txn-ops): not done`);
  }
  return { scope, ref, toRevision, head, puts, deletes, guards };
}

/**
 * For a sealed kind: each put of a data key gets the old value opened with
 * `keyring` and sealed anew, for the same path, to `recipients` (a fresh data key
 * and nonce, so the envelope differs from the old one), with a fresh sealed
 * version: now, or above the current value's if that one opens and is newer (a
 * writer clock behind the last writer's must not make daemons refuse the rollback
 * as a replay). An old VALUE under a new version is allowed: an operator holding an
 * identity chose it. Plaintext is zeroed at once.
 * `@meta` keys are copied as they were. Returns the values to write, by key.
 */
export async function resealPuts(plan: RollbackPlan, ks: Keyspace, keyring: Keyring | undefined, recipients: readonly Recipient[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const p of plan.puts) {
    const parsed = ks.parse(p.key);
    if (!isSealed(plan.ref.kind) || parsed.type === 'meta') {
      out.set(p.key, p.value);
      continue;
    }
    const rel = printable(ks.relative(p.key));
    if (parsed.type !== 'data') throw new UserError(`${rel}: invalid key (${printable(parsed.type === 'invalid' ? parsed.reason : parsed.type)}); cannot re-seal it, not rolled back`);
    if (!keyring) throw new UserError('secrets are re-sealed on rollback: --identity FILE is required (an identity that opens the old values)');
    let plain: Buffer;
    try {
      plain = await open(p.value, parsed.logicalPath, keyring);
    } catch (err) {
      if (err instanceof EnvelopeError) throw new UserError(`${rel} at revision ${plan.toRevision}: ${err.message}; nothing written`);
      throw err;
    }
    try {
      const after = p.current ? await currentVersion(p.current, parsed.logicalPath, keyring) : 0;
      out.set(p.key, Buffer.from(await seal(plain, parsed.logicalPath, recipients, undefined, { after })));
    } finally {
      plain.fill(0);
    }
  }
  return out;
}

/** The authenticated sealed version of the value now at a path; 0 when this identity cannot open it (then only the clock orders the two). */
async function currentVersion(value: Buffer, logicalPath: string, keyring: Keyring): Promise<number> {
  try {
    const { plaintext, version } = await openVersioned(value, logicalPath, keyring);
    plaintext.fill(0);
    return version;
  } catch (err) {
    if (err instanceof EnvelopeError) return 0;
    throw err;
  }
}

/**
 * Writes the plan in ONE transaction:
 *  (1) guards: every key that existed at the plan's head still has its mod
 *      revision (a change or a delete fails it), and no key in the object was
 *      modified after the head (a key created since fails it: a range compare);
 *  (2) then every put and delete, all at one new revision; else nothing.
 * Returns that revision. A failed guard is a UserError: nothing was written.
 */
export async function commitRollback(client: Etcd3, ks: Keyspace, plan: RollbackPlan, values: ReadonlyMap<string, Buffer>): Promise<number> {
  const { kv } = rawClients(client);
  const range = objectRange(ks, plan.scope, plan.ref);
  // (1)
  const compare: ICompare[] = plan.guards.map((g) => ({ key: Buffer.from(g.key), target: 'Mod', result: 'Equal', mod_revision: g.mod }));
  compare.push({ key: range.key, range_end: range.end, target: 'Mod', result: 'Less', mod_revision: plan.head + 1 });
  // (2)
  const success: IRequestOp[] = [
    ...plan.puts.map((p) => ({ request_put: { key: Buffer.from(p.key), value: values.get(p.key) ?? p.value } })),
    ...plan.deletes.map((d) => ({ request_delete_range: { key: Buffer.from(d.key) } })),
  ];
  const res = await kv.txn({ compare, success, failure: [] });
  if (!res.succeeded) {
    throw new OperationFailed(`${printable(ks.relative(range.key.toString()))}: changed after the diff was read at revision ${plan.head}; nothing written (run rollback again to see the new diff)`);
  }
  return Number(res.header.revision);
}
