/**
 * `rollout pause|resume|abort`: an operator's moves on a rollout's record, each one
 * guarded transaction (./rollout-record.ts). The driver (./rollout.ts) sees them at
 * its next poll.
 */
import type { Etcd3 } from 'etcd3';
import { UserError } from '../errors.js';
import type { Keyspace } from '../keyspace.js';
import { waitApplied } from './rollout.js';
import { begunClusters, clone, load, overrideOps, RolloutMoved, writeRollout, type Rollout } from './rollout-record.js';

/** `pause`: a running rollout stops at its next poll (its overrides stay); `resume` carries on. */
export async function pauseRollout(client: Etcd3, ks: Keyspace, id: string): Promise<Rollout> {
  const l = await load(client, ks, id);
  if (l.rollout.state !== 'running') throw new UserError(`rollout ${id} is ${l.rollout.state}, not running: nothing to pause`);
  const next = clone(l.rollout);
  next.state = 'paused';
  next.reason = 'paused by an operator';
  await writeRollout(client, ks, l, next);
  return next;
}

/**
 * `resume`: a paused or halted rollout is set running again (a halted wave waits
 * and gates again, counting the errors open now); a running one whose CLI died is
 * simply driven on. A conflict halt cannot be resumed: the global value it would
 * overwrite is not the one it started from.
 */
export async function resumeRollout(client: Etcd3, ks: Keyspace, id: string): Promise<void> {
  const l = await load(client, ks, id);
  const r = l.rollout;
  if (r.state === 'running') return;
  if (r.state === 'promoted' || r.state === 'aborted') throw new UserError(`rollout ${id} is ${r.state}: nothing to resume`);
  if (r.conflict) throw new UserError(`rollout ${id} halted because ${r.reason}; it cannot resume over someone else's change: abort it and start a new one`);
  const next = clone(r);
  next.state = 'running';
  delete next.reason;
  const w = next.waves[next.current];
  if (r.state === 'halted' && w && w.phase !== 'pending' && w.phase !== 'done') {
    w.phase = 'applying';
    delete w.baseline;
  }
  await writeRollout(client, ks, l, next);
}

/** `abort`: one txn deleting every override of the rollout and its lock; then the wait for those clusters' nodes. */
export async function abortRollout(client: Etcd3, ks: Keyspace, id: string, timeoutMs: number): Promise<{ rollout: Rollout; revision: number; applied: number; nodes: number; seconds: number }> {
  for (;;) {
    const l = await load(client, ks, id);
    const r = l.rollout;
    if (r.state === 'promoted') throw new UserError(`rollout ${id} is promoted: its change is the global value now (confsync rollback ${r.ref.namespace}/${r.ref.name} --to-revision … undoes it)`);
    if (r.state === 'aborted') return { rollout: r, revision: r.finalRevision!, applied: 0, nodes: 0, seconds: 0 };
    const next = clone(r);
    next.state = 'aborted';
    next.reason = r.state === 'halted' ? `aborted after: ${r.reason}` : 'aborted by an operator';
    const ops = [...overrideOps(ks, r, r.waves.flatMap((w) => w.clusters), false), { request_delete_range: { key: Buffer.from(ks.rolloutLockKey(r.ref)) } }];
    let done;
    try {
      done = await writeRollout(client, ks, l, next, ops);
    } catch (err) {
      if (err instanceof RolloutMoved) continue; // a driver advanced it meanwhile: abort what is there now
      throw err;
    }
    const wait = await waitApplied(client, ks, begunClusters(r), done!.revision, timeoutMs);
    return { rollout: next, revision: done!.revision, ...wait };
  }
}
