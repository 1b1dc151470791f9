/**
 * `confsync rollout`'s library half: the steps of a staged rollout, each one etcd
 * transaction guarded by the record's mod revision (./rollout-plan.ts), so the CLI
 * can die anywhere and `resume` carries on from the record.
 *
 * The driver, one pass per step, reading the record afresh each time:
 *  (1) state not running → return it (paused, halted, aborted, promoted);
 *  (2) wave `pending`: note each live node's errors (the baseline), then ONE txn:
 *      the wave's overrides (clusters/<c>/<kind>/<ns>/<name>/<key> for each of its
 *      clusters), phase `applying`, guarded by the record and by every global key's
 *      mod revision at start (someone else changed one → halt);
 *  (3) `applying`: poll status/<c>/* until every live node of the wave's clusters
 *      reports revision ≥ the wave's txn (as `status --wait`); a node still behind
 *      after --apply-timeout → halt;
 *  (4) `gating`: for --gate-seconds keep polling; a node whose error count rose
 *      since the baseline, or whose lastError names this object, counts; more than
 *      --max-errors → halt (also while applying);
 *  (5) after the last wave, promotion — ONE txn: the global keys set to the new
 *      values, every override of the rollout deleted, the lock deleted; a cluster's
 *      merged value is the new one before and after it, so no file flips back.
 * Every poll also re-reads the global keys: a mod revision other than the one at
 * start halts the rollout (`conflict`: only abort gets out of it).
 * Abort (./rollout-control.ts) — ONE txn: every override of the rollout and the lock deleted; each cluster
 * is back on the global value it never stopped having.
 */
import type { Etcd3, IRequestOp } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { GLOBAL, objectId, printable, type Keyspace } from '../keyspace.js';
import type { NodeStatus } from '../status.js';
import { alreadyRunning, clone, globalGuards, load, loadRollout, overrideOps, RolloutMoved, valueFor, writeRollout, type Baseline, type Loaded, type Rollout } from './rollout-record.js';
import { parseStatus } from './status.js';

const POLL_MS = 150;

/** What the driver reports as it goes (the CLI prints it: text on a terminal, nothing with -o json). */
export type RolloutEvent =
  | { type: 'wrote'; wave: number; revision: number }
  | { type: 'applying'; wave: number; applied: number; nodes: number; errors: number }
  | { type: 'gate'; wave: number; secondsLeft: number; errors: number }
  | { type: 'wave-done'; wave: number; seconds: number }
  | { type: 'promoted'; revision: number }
  | { type: 'settled'; revision: number; applied: number; nodes: number; seconds: number };

export interface DriveOptions {
  onEvent?: (e: RolloutEvent) => void;
}
/** Creates the record and the object's lock in one txn; a second rollout of the object is refused. */
export async function createRollout(client: Etcd3, ks: Keyspace, r: Rollout): Promise<void> {
  const lock = ks.rolloutLockKey(r.ref);
  const res = await client
    .if(lock, 'Version', '==', 0)
    .and(ks.rolloutKey(r.id), 'Version', '==', 0)
    .then(client.put(lock).value(r.id), client.put(ks.rolloutKey(r.id)).value(JSON.stringify(r)))
    .else(client.get(lock))
    .commit();
  if (!res.succeeded) {
    const other = res.responses[0]?.response_range?.kvs[0]?.value.toString() ?? '?';
    throw alreadyRunning(r.ref, other);
  }
}
/** Live nodes of `clusters` (status/<c>/*; every cluster's when undefined), by `<cluster>/<node>`. */
export async function nodesOf(client: Etcd3, ks: Keyspace, clusters?: string[]): Promise<Map<string, NodeStatus>> {
  const out = new Map<string, NodeStatus>();
  for (const c of clusters ?? [undefined]) {
    const res = await client.getAll().prefix(ks.statusPrefix(c)).exec();
    for (const kv of res.kvs) {
      const s = parseStatus(kv.value.toString());
      const [cluster, node] = ks.relative(kv.key.toString()).split('/').slice(1);
      if (s && s.cluster === cluster && s.node === node) out.set(`${cluster}/${node}`, s);
    }
  }
  return out;
}

function namesObject(r: Rollout, s: NodeStatus): boolean {
  const id = objectId(r.ref.kind, r.ref.namespace, r.ref.name);
  const p = s.lastError?.path;
  return p !== undefined && (p === id || p.startsWith(`${id}/`) || p.endsWith(`/${id}`) || p.includes(`/${id}/`));
}

function baselineOf(r: Rollout, nodes: Map<string, NodeStatus>, keepNamed: boolean): Record<string, Baseline> {
  return Object.fromEntries([...nodes].map(([who, s]) => [who, { errors: s.errors, named: keepNamed && namesObject(r, s) }]));
}

/** Errors since the baseline: per node, its count's rise, or 1 when its lastError newly names this object. */
function countErrors(r: Rollout, baseline: Record<string, Baseline>, nodes: Map<string, NodeStatus>): { count: number; detail: string[] } {
  let count = 0;
  const detail: string[] = [];
  for (const [who, s] of nodes) {
    const base = baseline[who];
    const named = namesObject(r, s) && !base?.named;
    const rise = base && s.errors >= base.errors ? s.errors - base.errors : 0;
    const n = Math.max(rise, named ? 1 : 0);
    if (n > 0) {
      count += n;
      detail.push(`${who}: ${s.lastError ? `${s.lastError.path}: ${s.lastError.reason}` : `${n} new error(s)`}`);
    }
  }
  return { count, detail };
}

/** The global key (if any) whose mod revision moved since start. */
async function movedGlobal(client: Etcd3, ks: Keyspace, r: Rollout): Promise<string | undefined> {
  for (const k of r.keys) {
    const key = ks.dataKey(GLOBAL, r.ref, k);
    const kv = (await client.get(key).exec()).kvs[0];
    const mod = kv ? kv.mod_revision : '0';
    if (mod !== r.globalMods[k]) return `${ks.relative(key)} was changed by someone else (mod revision ${r.globalMods[k]} at start, ${mod} now)`;
  }
  return undefined;
}

async function halt(client: Etcd3, ks: Keyspace, l: Loaded, reason: string, conflict = false): Promise<void> {
  const next = clone(l.rollout);
  next.state = 'halted';
  next.reason = printable(reason);
  if (conflict) next.conflict = true;
  await writeRollout(client, ks, l, next);
}

/**
 * Drives rollout `id` from its record until it is no longer running (see the
 * numbered steps above). Returns the final record. RolloutMoved when another CLI
 * driving the same rollout won a write: this one stops (a pause or abort that won
 * one is returned as the record's state).
 */
export async function driveRollout(client: Etcd3, ks: Keyspace, id: string, opts: DriveOptions = {}): Promise<Rollout> {
  for (;;) {
    try {
      return await drive(client, ks, id, opts.onEvent ?? (() => undefined));
    } catch (err) {
      if (!(err instanceof RolloutMoved)) throw err;
      // Lost a write race: to an operator's pause or abort (report that state), or to another driver (stop).
      const now = (await load(client, ks, id)).rollout;
      if (now.state === 'running') throw err;
    }
  }
}

async function drive(client: Etcd3, ks: Keyspace, id: string, emit: (e: RolloutEvent) => void): Promise<Rollout> {
  for (;;) {
    const l = await load(client, ks, id);
    const r = l.rollout;
    // (1)
    if (r.state !== 'running') return r;
    if (r.current >= r.waves.length) {
      await promote(client, ks, l, emit);
      continue;
    }
    const w = r.waves[r.current]!;
    if (w.phase === 'pending') {
      // (2)
      const next = clone(r);
      const nw = next.waves[next.current]!;
      nw.baseline = baselineOf(r, await nodesOf(client, ks, w.clusters), true);
      nw.phase = 'applying';
      nw.startedAt = new Date().toISOString();
      delete nw.revision;
      const done = await writeRollout(client, ks, l, next, overrideOps(ks, r, w.clusters, true), globalGuards(ks, r));
      if (!done) {
        await halt(client, ks, l, (await movedGlobal(client, ks, r)) ?? 'a global key changed since the rollout started', true);
        continue;
      }
      emit({ type: 'wrote', wave: r.current, revision: done.revision });
      continue;
    }
    // (3) (4)
    await watchWave(client, ks, l, emit);
  }
}

/** One wave's wait and gate; returns after the record was advanced or halted (or another writer moved it). */
async function watchWave(client: Etcd3, ks: Keyspace, l: Loaded, emit: (e: RolloutEvent) => void): Promise<void> {
  const r = l.rollout;
  const w = r.waves[r.current]!;
  const revision = w.revision!;
  let baseline = w.baseline;
  if (!baseline) {
    // Resumed after a halt: what is open now counts, what was counted before does not.
    const next = clone(r);
    next.waves[next.current]!.baseline = baselineOf(r, await nodesOf(client, ks, w.clusters), false);
    await writeRollout(client, ks, l, next);
    return;
  }
  const applyDeadline = Date.now() + r.options.applyTimeoutSeconds * 1000;
  let said = '';
  for (;;) {
    const now = await loadRollout(client, ks, r.id);
    if (now.mod !== l.mod) return; // paused, aborted or advanced by someone else: the driver re-reads
    const moved = await movedGlobal(client, ks, r);
    if (moved) return halt(client, ks, l, moved, true);
    const nodes = await nodesOf(client, ks, w.clusters);
    const errors = countErrors(r, baseline, nodes);
    if (errors.count > r.options.maxErrors) {
      return halt(client, ks, l, `wave ${w.name}: ${errors.count} error(s), over --max-errors ${r.options.maxErrors}: ${errors.detail.slice(0, 3).join('; ')}`);
    }
    if (w.phase === 'applying') {
      const behind = [...nodes].filter(([, s]) => s.revision < revision);
      const line = `${nodes.size - behind.length}/${nodes.size}/${errors.count}`;
      if (line !== said) emit({ type: 'applying', wave: r.current, applied: nodes.size - behind.length, nodes: nodes.size, errors: errors.count });
      said = line;
      if (nodes.size > 0 && behind.length === 0) {
        const next = clone(r);
        const nw = next.waves[next.current]!;
        nw.phase = 'gating';
        nw.appliedAt = new Date().toISOString();
        nw.gateUntil = new Date(Date.now() + r.options.gateSeconds * 1000).toISOString();
        await writeRollout(client, ks, l, next);
        return;
      }
      if (Date.now() > applyDeadline) {
        const who = nodes.size === 0 ? `no live node in ${w.clusters.join(', ')}` : behind.map(([n, s]) => `${n}@${s.revision}`).join(', ');
        return halt(client, ks, l, `wave ${w.name}: not applied within --apply-timeout ${r.options.applyTimeoutSeconds}s (revision ${revision}): ${who}`);
      }
    } else {
      const left = Date.parse(w.gateUntil!) - Date.now();
      const secondsLeft = Math.max(0, Math.ceil(left / 1000));
      const line = `${secondsLeft}/${errors.count}`;
      if (line !== said) emit({ type: 'gate', wave: r.current, secondsLeft, errors: errors.count });
      said = line;
      if (left <= 0) {
        const next = clone(r);
        const nw = next.waves[next.current]!;
        nw.phase = 'done';
        nw.doneAt = new Date().toISOString();
        next.current++;
        await writeRollout(client, ks, l, next);
        emit({ type: 'wave-done', wave: r.current, seconds: (Date.now() - Date.parse(w.startedAt ?? w.appliedAt!)) / 1000 });
        return;
      }
    }
    await sleep(POLL_MS);
  }
}

/** (5) The one promotion txn, then a wait (reported, never halting: it is done) for every node of the rollout's clusters. */
async function promote(client: Etcd3, ks: Keyspace, l: Loaded, emit: (e: RolloutEvent) => void): Promise<void> {
  const r = l.rollout;
  const clusters = r.waves.flatMap((w) => w.clusters);
  const next = clone(r);
  next.state = 'promoted';
  delete next.reason;
  const ops: IRequestOp[] = [
    ...r.keys.map((k): IRequestOp => ({ request_put: { key: Buffer.from(ks.dataKey(GLOBAL, r.ref, k)), value: valueFor(r, k) } })),
    ...overrideOps(ks, r, clusters, false),
    { request_delete_range: { key: Buffer.from(ks.rolloutLockKey(r.ref)) } },
  ];
  const done = await writeRollout(client, ks, l, next, ops, globalGuards(ks, r));
  if (!done) return halt(client, ks, l, (await movedGlobal(client, ks, r)) ?? 'a global key changed since the rollout started', true);
  emit({ type: 'promoted', revision: done.revision });
  // Every cluster watches global/, so every live node gets the promotion's revision.
  const settled = await waitApplied(client, ks, undefined, done.revision, r.options.applyTimeoutSeconds * 1000);
  emit({ type: 'settled', revision: done.revision, ...settled });
}

/** Polls until every live node of `clusters` reports `revision` (or the timeout): how many did, and how long it took. */
export async function waitApplied(client: Etcd3, ks: Keyspace, clusters: string[] | undefined, revision: number, timeoutMs: number): Promise<{ applied: number; nodes: number; seconds: number }> {
  const t0 = Date.now();
  for (;;) {
    const nodes = [...(await nodesOf(client, ks, clusters)).values()];
    const applied = nodes.filter((s) => s.revision >= revision).length;
    if (applied === nodes.length || Date.now() - t0 > timeoutMs) return { applied, nodes: nodes.length, seconds: (Date.now() - t0) / 1000 };
    await sleep(50);
  }
}
