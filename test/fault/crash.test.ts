/**
 * Fault: the daemon is SIGKILLed at 100 random points and restarted each time
 * (60 kills starting from etcd's list, 40 with an identity, so each start reads
 * the local snapshot and its journal — one a kill may have cut mid-append — and
 * resumes the watch from it when etcd still holds its revision),
 * while a writer keeps changing a 5-key object (self-checking, versioned values)
 * and creates/deletes 8 other objects. The kill lands a random 0–150 ms after
 * one of three points of the new process's life, in turn: its first log line,
 * its "listed etcd" line, its first "object written" line. Node's ~0.5 s of
 * module loading before the first line is of no interest — nothing touches etcd
 * or the disk yet — and the three starting points spread the kills over the
 * initial list, the initial reconcile (every object re-checked, the changed ones
 * re-projected) and the stream of projections the watch drives.
 *
 * A reader thread checks every projection the whole time: 0 torn files, 0 mixed
 * passes, versions never go backwards. After each kill the object dirs are
 * inspected for what the dead process left (a second payload dir, `..data_tmp`,
 * a temp key link, missing key links): that is how a kill mid-projection is told
 * from one between projections. After the last restart the daemon must converge
 * on etcd's state, deletions included, with nothing left over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateIdentity, writeIdentityFile } from '../../src/envelope/identity.js';
import { startEtcd } from '../harness/etcd.js';
import { DaemonProcess, until } from '../harness/daemon.js';
import { commit, commitUntilAcked, faultValue, logLines, parseFaultValue, startSampler, writerClient } from './etcd-cluster.js';

const P = '/confsync';
/** Kills of the run without a snapshot; the run with one gets two thirds as many. */
// 40 (+ 27 with an identity) in npm test: the bugs this test found showed after 16–36 kills,
// and CI must stay under 20 min (it reached 19 with 60 + 40); CONFSYNC_CRASH_KILLS=120 (or
// scripts/loop-test.sh) for a soak.
const KILLS = Number(process.env.CONFSYNC_CRASH_KILLS ?? 40);
const VARIANTS = [
  { snapshot: false, kills: KILLS },
  { snapshot: true, kills: Math.max(1, Math.round((KILLS * 2) / 3)) },
];
const MAX_DELAY_MS = 150;
const PACE_MS = 25;
const BUSY_KEYS = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
const CHURN = Array.from({ length: 8 }, (_, i) => `churn-${i}`);
const CHURN_KEYS = ['x', 'y', 'z'];
const STATIC = Array.from({ length: 30 }, (_, i) => `static-${i}`);

const key = (name: string, k: string) => `${P}/global/configmaps/default/${name}/${k}`;
/** 2–18 KiB: big enough that a file is written in more than one go. */
const busyValue = (n: number, k: string) => faultValue(n, k, 2048 + ((n * 7919) % 33) * 512);

type Phase = 'boot' | 'listing' | 'initial reconcile' | 'watching';

/** What a kill left in an object dir: evidence of a projection cut short. */
function leftovers(dir: string, keys: string[]): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const found: string[] = [];
  const tsDirs = entries.filter((e) => /^\.\.\d{4}_/.test(e));
  let target: string | undefined;
  try {
    target = fs.readlinkSync(path.join(dir, '..data'));
  } catch {
    target = undefined;
  }
  if (entries.includes('..data_tmp')) found.push('..data_tmp');
  if (entries.some((e) => e.startsWith('..link_tmp'))) found.push('temp key link');
  if (target === undefined && entries.length > 0) found.push('dir without ..data');
  if (tsDirs.length > 1) found.push('second payload dir');
  if (target !== undefined) {
    const payload = fs.readdirSync(path.join(dir, target), { withFileTypes: true }).map((e) => e.name);
    const linked = keys.filter((k) => entries.includes(k));
    if (payload.length > 0 && linked.length < payload.length) found.push('key links missing');
  }
  return found;
}

function phaseOf(log: string): { phase: Phase; written: number } {
  const lines = logLines(log);
  const listed = lines.find((l) => l.msg === 'listed etcd; reconciling everything' || l.msg === 'caught up from the local snapshot; reconciling everything');
  const written = lines.filter((l) => l.msg === 'object written');
  if (!lines.some((l) => l.msg === 'etcd source state')) return { phase: 'boot', written: written.length };
  if (!listed) return { phase: 'listing', written: written.length };
  // A projection of a revision newer than the snapshot came from the watch.
  if (written.some((l) => l.revision > listed.revision)) return { phase: 'watching', written: written.length };
  return { phase: 'initial reconcile', written: written.length };
}

for (const { snapshot, kills: KILLS } of VARIANTS)
test(`daemon SIGKILLed at ${KILLS} random points under writes${snapshot ? ', each start from its local snapshot + journal' : ''}: 0 torn or mixed reads, restart converges (deletions included)`, async (t) => {
  const started = Date.now();
  const etcd = await startEtcd();
  const writer = writerClient([etcd.endpoint]);
  const idDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-crash-id-'));
  if (snapshot) await writeIdentityFile(path.join(idDir, 'identity.key'), generateIdentity());
  const config = { cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, ...(snapshot ? { identity: path.join(idDir, 'identity.key') } : {}) };
  const d = new DaemonProcess(config);
  let last: DaemonProcess | undefined;
  const spawned: DaemonProcess[] = [];
  const dirOf = (name: string) => d.file('configmaps', 'default', name);
  let sampler: Awaited<ReturnType<typeof startSampler>> | undefined;
  let writing = true;
  let writerLoop: Promise<void> | undefined;
  try {
    // Seed: the busy object, 30 static objects (a list and an initial reconcile worth interrupting), half the churn objects.
    const exists = new Set<string>();
    await commit(writer, BUSY_KEYS.map((k) => [key('busy', k), busyValue(0, k)]));
    for (const s of STATIC) await commit(writer, [[key(s, 'k1'), faultValue(1, 'k1')], [key(s, 'k2'), faultValue(1, 'k2')]]);
    for (const c of CHURN.slice(0, 4)) {
      await commit(writer, CHURN_KEYS.map((k) => [key(c, k), faultValue(0, k)]));
      exists.add(c);
    }
    d.start();
    await d.ready();
    await until(() => fs.existsSync(path.join(dirOf('busy'), 'epsilon')) && fs.existsSync(path.join(dirOf(STATIC.at(-1)!), 'k2')), 'seed projected');
    sampler = await startSampler(
      [{ id: 'busy', dir: dirOf('busy'), keys: BUSY_KEYS }, ...CHURN.map((c) => ({ id: c, dir: dirOf(c), keys: CHURN_KEYS })), { id: STATIC[0]!, dir: dirOf(STATIC[0]!), keys: ['k1', 'k2'] }],
      { pauseMs: 1 },
    );

    let n = 0;
    let lastRev = 0;
    writerLoop = (async () => {
      while (writing) {
        n++;
        const deletes: string[] = [];
        const puts: [string, Buffer][] = BUSY_KEYS.map((k) => [key('busy', k), busyValue(n, k)]);
        if (n % 3 === 0) {
          const c = CHURN[(n / 3) % CHURN.length]!;
          if (exists.delete(c)) deletes.push(...CHURN_KEYS.map((k) => key(c, k)));
          else {
            puts.push(...CHURN_KEYS.map((k): [string, Buffer] => [key(c, k), faultValue(n, k)]));
            exists.add(c);
          }
        }
        lastRev = (await commitUntilAcked(writer, puts, deletes)).revision;
        // Keep etcd's history small; a daemon resuming from before this re-lists.
        if (n % 1000 === 0) etcd.ctl('compact', String(lastRev));
        await sleep(PACE_MS);
      }
    })();

    const phases: Record<Phase, number> = { boot: 0, listing: 0, 'initial reconcile': 0, watching: 0 };
    const cutShort: Record<string, number> = {};
    let midProjection = 0;
    let betweenProjections = 0;
    let untouched = 0;
    let projections = 0;
    let removedBusy = 0;
    let resumed = 0;
    let journalCut = 0;
    const bootMs: number[] = [];
    const objects = ['busy', ...CHURN];
    const signature = (o: string) => {
      try {
        const dir = dirOf(o);
        return `${fs.readdirSync(dir).sort().join(' ')} -> ${fs.existsSync(path.join(dir, '..data')) ? fs.readlinkSync(path.join(dir, '..data')) : ''}`;
      } catch {
        return 'absent';
      }
    };
    let before = new Map(objects.map((o) => [o, signature(o)]));
    /** Spawn a process; resolves with the time of its first output (node takes ~0.5 s to get there). */
    const spawnDaemon = () => {
      const p = new DaemonProcess(config, d.dir).start();
      spawned.push(p);
      const spawnedAt = Date.now();
      const proc = (p as unknown as { proc: ChildProcess }).proc;
      const first = new Promise<number>((resolve) => proc.stdout!.once('data', () => resolve(Date.now())));
      const seen = (text: string) =>
        new Promise<void>((resolve) => {
          const onData = () => p.log.includes(text) && (proc.stdout!.off('data', onData), resolve());
          proc.stdout!.on('data', onData);
        });
      const listed = Promise.race([seen('"msg":"listed etcd'), seen('"msg":"caught up from the local snapshot')]);
      const projected = seen('"msg":"object written"');
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      return { p, spawnedAt, first, listed, projected, exited };
    };
    await d.signal('SIGKILL');
    for (let i = 0; i < KILLS; i++) {
      const cur = spawnDaemon();
      bootMs.push((await cur.first) - cur.spawnedAt);
      // Counting only from the first line, a slow machine puts nearly every kill
      // before the first write; so a third count from the end of the initial list
      // and a third from the first completed projection.
      if (i % 3 === 1) await Promise.race([cur.listed, cur.exited]);
      if (i % 3 === 2) await Promise.race([cur.projected, cur.exited]);
      await sleep(Math.random() * MAX_DELAY_MS);
      assert.equal(await cur.p.signal('SIGKILL'), null);
      // What did the dead process change on disk, and did it leave a projection half-done?
      const after = new Map(objects.map((o) => [o, signature(o)]));
      const left = new Set<string>();
      let touched = false;
      for (const o of objects) {
        if (after.get(o) === before.get(o)) continue;
        touched = true;
        for (const l of leftovers(dirOf(o), o === 'busy' ? BUSY_KEYS : CHURN_KEYS)) left.add(l);
      }
      if (left.size > 0) midProjection++;
      else if (touched) betweenProjections++;
      else untouched++;
      for (const l of left) cutShort[l] = (cutShort[l] ?? 0) + 1;
      before = after;
      if (cur.p.log.includes('"msg":"caught up from the local snapshot')) resumed++;
      if (cur.p.log.includes('snapshot journal read up to a bad record')) journalCut++;
      const { phase, written } = phaseOf(cur.p.log);
      phases[phase]++;
      projections += written;
      if (logLines(cur.p.log).some((l) => l.msg === 'files removed' && l.id === 'configmaps/default/busy')) removedBusy++;
    }

    // Dirs without ..data a kill left behind (cut short before the first swap, or after
    // ..data was unlinked on removal): the last process must prune or adopt them.
    const unowned = CHURN.filter((c) => fs.existsSync(dirOf(c)) && !fs.existsSync(path.join(dirOf(c), '..data')));

    // The last process lives: it must converge while the writer still runs, then after it stops.
    // The writer goes on until every churn object was created and deleted under it: the
    // deletions of the end state are then this process's own, after all the crashes.
    last = spawnDaemon().p;
    await last.ready();
    const toggledTwice = n + 2 * 3 * CHURN.length + 3;
    await until(() => n >= toggledTwice, 'two churn cycles under the last process', 30_000);
    writing = false;
    await writerLoop;
    const final = n;
    await until(() => {
      try {
        return BUSY_KEYS.every((k) => parseFaultValue(fs.readFileSync(path.join(dirOf('busy'), k)), k) === final);
      } catch {
        return false;
      }
    }, 'busy at the last write', 20_000);
    await until(() => CHURN.every((c) => fs.existsSync(dirOf(c)) === exists.has(c)), 'churn objects created/deleted as in etcd', 20_000);
    await sleep(300);
    const verdicts = await sampler.stop();
    sampler = undefined;
    if (logLines(last.log).some((l) => l.msg === 'files removed' && l.id === 'configmaps/default/busy')) removedBusy++;

    // Files = etcd: every owned object dir, every key, byte for byte; nothing else under the root.
    const all = await writer.getAll().prefix(`${P}/global/configmaps/`).buffers();
    const want = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(all)) want.set(k.slice(`${P}/global/configmaps/`.length), v);
    const have = new Map<string, Buffer>();
    const stray: string[] = [];
    const nsDir = path.join(d.root, 'configmaps', 'default');
    for (const name of fs.readdirSync(nsDir)) {
      const entries = fs.readdirSync(path.join(nsDir, name));
      const tsDirs = entries.filter((e) => e.startsWith('..') && e !== '..data');
      if (!entries.includes('..data') || tsDirs.length !== 1) stray.push(`${name}: ${entries.filter((e) => e.startsWith('..')).join(' ')}`);
      for (const e of entries) if (!e.startsWith('..')) have.set(`default/${name}/${e}`, fs.readFileSync(path.join(nsDir, name, e)));
    }
    assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort(), 'the same keys as etcd');
    for (const [k, v] of want) assert.ok(have.get(k)!.equals(v), `${k} equals etcd`);
    assert.deepEqual(stray, [], 'every object dir is ..data + one payload dir + its keys');
    assert.deepEqual(fs.readdirSync(path.join(d.root, 'configmaps')), ['default']);

    // The reader, over the whole run.
    const sum = (f: (v: (typeof verdicts)[number]) => number) => verdicts.reduce((s, v) => s + f(v), 0);
    const samples = verdicts.flatMap((v) => v.samples);
    t.diagnostic(`${KILLS} kills in ${Math.round((Date.now() - started) / 1000)} s; phase at the kill (from the dead process's log): ${Object.entries(phases).map(([p, c]) => `${p} ${c}`).join(', ')}`);
    t.diagnostic(`effect on disk: ${midProjection} kills cut a projection short (left-overs in a dir the process had changed: ${Object.entries(cutShort).map(([k, c]) => `${k} ×${c}`).join(', ') || 'none'}), ${betweenProjections} came after complete projections, ${untouched} before the process changed anything`);
    t.diagnostic(`churn object dirs without ..data when the kills ended: ${unowned.length ? unowned.join(', ') : 'none'}`);
    t.diagnostic(`process start → first log line: median ${bootMs.sort((a, b) => a - b)[bootMs.length >> 1]} ms; projections logged by the killed processes: ${projections}`);
    t.diagnostic(`writes ${final} (busy object: 5 keys; ${CHURN.length} objects created/deleted every 3rd write); reader: ${sum((v) => v.passes)} passes judged, ${sum((v) => v.consistent)} consistent, ${sum((v) => v.absent)} absent, ${sum((v) => v.straddled)} straddled, ${sum((v) => v.reads)} file reads`);
    t.diagnostic(`torn ${sum((v) => v.torn)}, mixed ${sum((v) => v.mixed)}, backwards ${sum((v) => v.backwards)}, orphan reads ${sum((v) => v.orphanReads)}; passes that saw a new object with some key links not created yet: ${sum((v) => v.linksPending)}`);
    assert.deepEqual(samples, [], 'reader samples');
    assert.equal(sum((v) => v.torn), 0, 'torn reads');
    assert.equal(sum((v) => v.mixed), 0, 'mixed reads');
    assert.equal(sum((v) => v.backwards), 0, 'versions went backwards');
    assert.equal(sum((v) => v.orphanReads), 0);
    const busy = verdicts.find((v) => v.id === 'busy')!;
    assert.ok(busy.consistent > 1000);
    // The busy object is never deleted in etcd: a process that removed it did so before its first list.
    t.diagnostic(`restarts that removed the busy object (never deleted in etcd): ${removedBusy}; reader passes that found it absent: ${busy.absent}, with key links missing: ${busy.linksPending}`);
    // Found here on a loaded machine (restarts whose first list was slower than the drift
    // watch's start-up hints removed `busy`); fixed in 7e2e5ae.
    assert.equal(removedBusy, 0, 'processes that removed the busy object');
    assert.equal(busy.absent + busy.linksPending, 0, 'reader passes without the busy object or its key links');
    assert.equal(Object.values(phases).reduce((a, b) => a + b), KILLS);
    if (snapshot) {
      t.diagnostic(`killed processes that resumed from the local snapshot (no list): ${resumed}; that found the journal cut by the kill before them: ${journalCut}`);
      assert.ok(resumed > 0, 'some starts resumed from the snapshot');
    }
    assert.ok(last.running);
  } finally {
    writing = false;
    await writerLoop?.catch(() => undefined);
    await sampler?.stop().catch(() => undefined);
    writer.close();
    for (const p of spawned) if (p.running) await p.signal('SIGKILL');
    await d.cleanup();
    fs.rmSync(idDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

// Found by this suite (FileSink.list() returned only dirs with ..data, so such a dir was never
// pruned; a secret's plaintext payload stayed on disk); fixed in 7e2e5ae.
test('left-overs of a projection cut short are removed on restart when the object was deleted meanwhile', async () => {
  const etcd = await startEtcd();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, resyncSeconds: 1 });
  try {
    etcd.ctl('put', `${P}/global/configmaps/default/keep/k`, 'v');
    etcd.ctl('put', `${P}/global/configmaps/default/owned/k`, 'v');
    d.start();
    await d.ready();
    await until(() => fs.existsSync(d.file('configmaps', 'default', 'owned', 'k')), 'projected');
    assert.equal(await d.signal('SIGKILL'), null);
    etcd.ctl('del', `${P}/global/configmaps/default/owned/k`);
    // The exact states FileSink leaves when killed (src/sink/files.ts, remove() and steps 3-4):
    // (a) remove() after `rm ..data`, before `rm -r dir`: the emptied payload dir only;
    const a = d.file('configmaps', 'default', 'gone');
    fs.mkdirSync(path.join(a, '..2026_01_01_00_00_00_000.AbCdEf'), { recursive: true });
    // (b) the first projection of a secret after its payload was written, before the ..data swap;
    const b = d.file('secrets', 'default', 'db');
    fs.mkdirSync(path.join(b, '..2026_01_01_00_00_00_000.XyZabc'), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(b, '..2026_01_01_00_00_00_000.XyZabc', 'password'), 'plaintext-of-a-deleted-secret', { mode: 0o400 });
    // (c) control: an owned dir whose object is gone from etcd is pruned.
    d.start();
    await d.ready();
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'owned')), 'the owned dir pruned');
    await sleep(1500); // and a periodic resync on top
    assert.equal(fs.existsSync(a), false, `${a} (left by a kill mid-remove) is still there`);
    assert.equal(fs.existsSync(b), false, `${b} (a deleted secret's plaintext payload, left by a kill before the first swap) is still there`);
  } finally {
    await d.cleanup();
    await etcd.stop();
  }
});
