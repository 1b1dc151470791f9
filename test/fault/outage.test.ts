/**
 * Fault: etcd is SIGKILLed for 30 s in the middle of 500 writes, then started
 * again on the same data (the same etcd, as after a crash or a reboot).
 *
 * Each write is one transaction: the 3 keys of `configmaps/default/outage`
 * (self-checking values carrying the write's number), a new object `w-<n>`, and
 * the deletion of `w-<n-20>` — so a lost or reordered watch event shows up in
 * the final state, not only in the one object that is overwritten every time.
 * During the outage the writer keeps retrying its next write until etcd is back.
 *
 * A reader thread samples the projection the whole time. Checked: no torn or
 * mixed pass, versions never go backwards, the files stay exactly at the last
 * write before the kill for the whole outage, every write is covered by a
 * projection of it or a later one, the daemon projects only states etcd had (in
 * revision order), it resumes by watch (no re-list), and the final tree equals etcd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEtcd } from '../harness/etcd.js';
import { DaemonProcess, readOr, until } from '../harness/daemon.js';
import { commit, commitUntilAcked, faultValue, logLines, parseFaultValue, percentile, startSampler, walk, writerClient } from './etcd-cluster.js';

const P = '/confsync';
const KEYS = ['a', 'b', 'c'];
const WRITES = 500;
const KILL_AFTER = 200;
const OUTAGE_MS = 30_000;
const PACE_MS = 15;
/** `w-<n>` objects alive at once. */
const WINDOW = 20;

const key = (name: string, k: string) => `${P}/global/configmaps/default/${name}/${k}`;

function versionOn(file: string, k: string): number | undefined {
  try {
    return parseFaultValue(fs.readFileSync(file), k);
  } catch {
    return undefined;
  }
}

/** Every owned object under `<root>/configmaps`: "ns/name" -> key -> bytes (read through the user-visible links). */
function projectedTree(root: string): Map<string, Map<string, Buffer>> {
  const tree = new Map<string, Map<string, Buffer>>();
  const base = path.join(root, 'configmaps');
  for (const ns of fs.existsSync(base) ? fs.readdirSync(base) : []) {
    for (const name of fs.readdirSync(path.join(base, ns))) {
      const dir = path.join(base, ns, name);
      const files = new Map<string, Buffer>();
      for (const f of fs.readdirSync(dir)) if (!f.startsWith('..')) files.set(f, fs.readFileSync(path.join(dir, f)));
      tree.set(`${ns}/${name}`, files);
    }
  }
  return tree;
}

test('etcd killed for 30 s during 500 writes: last good files stay, every write applied in order, no torn read, converges to etcd', async (t) => {
  const etcd = await startEtcd();
  const writer = writerClient([etcd.endpoint]);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] } });
  const objDir = d.file('configmaps', 'default', 'outage');
  let sampler: Awaited<ReturnType<typeof startSampler>> | undefined;
  let restart: Promise<void> | undefined;
  try {
    const seedRev = await commit(writer, [[key('static', 'k'), faultValue(7, 'k')], ...KEYS.map((k): [string, Buffer] => [key('outage', k), faultValue(0, k)])]);
    d.start();
    await d.ready();
    await until(() => versionOn(path.join(objDir, 'a'), 'a') === 0 && fs.existsSync(d.file('configmaps', 'default', 'static', 'k')), 'seed projected');
    sampler = await startSampler([
      { id: 'outage', dir: objDir, keys: KEYS },
      { id: 'static', dir: d.file('configmaps', 'default', 'static'), keys: ['k'] },
    ]);

    const acks: { n: number; revision: number; ackAt: number; attempts: number }[] = [];
    let killAt = 0;
    let restartedAt = 0;
    let restartBegan = 0;
    const duringOutage: { at: number; target?: string; versions: (number | undefined)[] }[] = [];
    let monitor: Promise<void> | undefined;
    for (let n = 1; n <= WRITES; n++) {
      if (n === KILL_AFTER + 1) {
        // The last good state is write 200: wait until it is on disk, then kill etcd.
        await until(() => versionOn(path.join(objDir, 'a'), 'a') === KILL_AFTER, `write ${KILL_AFTER} projected before the kill`);
        await etcd.kill('SIGKILL');
        killAt = Date.now();
        restart = sleep(OUTAGE_MS).then(async () => {
          restartBegan = Date.now(); // etcd serves from some point inside start(): "down" ends here
          await etcd.start();
          restartedAt = Date.now();
        });
        // A second look from this thread, once a second, for the whole outage.
        monitor = (async () => {
          while (!restartBegan) {
            let target: string | undefined;
            try {
              target = fs.readlinkSync(path.join(objDir, '..data'));
            } catch {
              target = undefined;
            }
            duringOutage.push({ at: Date.now(), target, versions: KEYS.map((k) => versionOn(path.join(objDir, k), k)) });
            await sleep(1000);
          }
        })();
      }
      const puts = [...KEYS.map((k): [string, Buffer] => [key('outage', k), faultValue(n, k)]), [key(`w-${n}`, 'k'), faultValue(n, 'k')] as [string, Buffer]];
      const ack = await commitUntilAcked(writer, puts, n > WINDOW ? [key(`w-${n - WINDOW}`, 'k')] : [], 200);
      acks.push({ n, ...ack });
      await sleep(PACE_MS);
    }
    await restart;
    await monitor;

    // Converged: the last write everywhere, exactly the last WINDOW w-objects.
    await until(() => versionOn(path.join(objDir, 'c'), 'c') === WRITES, 'last write projected', 20_000);
    const wantW = Array.from({ length: WINDOW }, (_, i) => `w-${WRITES - WINDOW + 1 + i}`);
    await until(() => {
      const names = fs.readdirSync(path.join(d.root, 'configmaps', 'default')).filter((n) => n.startsWith('w-'));
      return names.length === WINDOW && wantW.every((w) => names.includes(w));
    }, 'w-objects converged', 20_000);
    await sleep(300); // let the reader take a few more passes of the final state
    const [outage, statik] = await sampler.stop();
    sampler = undefined;
    assert.ok(outage && statik);

    // The final tree equals etcd's, byte for byte.
    const inEtcd = new Map<string, Map<string, Buffer>>();
    const all = await writer.getAll().prefix(`${P}/global/configmaps/`).buffers();
    for (const [k, v] of Object.entries(all)) {
      const [ns, name, file] = k.slice(`${P}/global/configmaps/`.length).split('/') as [string, string, string];
      if (!inEtcd.has(`${ns}/${name}`)) inEtcd.set(`${ns}/${name}`, new Map());
      inEtcd.get(`${ns}/${name}`)!.set(file, v);
    }
    assert.deepEqual(projectedTree(d.root), inEtcd, 'files equal etcd');
    assert.equal(inEtcd.size, WINDOW + 2);

    // The reader: no torn, mixed or backwards read; the object never vanished.
    for (const v of [outage, statik]) {
      assert.deepEqual(v.samples, [], `${v.id}: reader samples`);
      assert.equal(v.torn, 0);
      assert.equal(v.mixed, 0);
      assert.equal(v.backwards, 0);
      assert.equal(v.absent + v.linksPending + v.orphanReads, 0, `${v.id}: files stayed in place`);
      assert.ok(v.consistent > 0);
    }
    assert.deepEqual(statik.states.map((s) => s[1]), [7], 'the untouched object never changed');

    // During the outage: the files stayed at write 200 (last good), and nothing moved.
    assert.ok(restartedAt - killAt >= OUTAGE_MS);
    const moved = outage.states.filter(([at]) => at > killAt && at < restartBegan);
    assert.deepEqual(moved, [], 'no change seen by the reader while etcd was down');
    const lastBefore = outage.states.filter(([at]) => at <= killAt).at(-1);
    assert.equal(lastBefore?.[1], KILL_AFTER);
    assert.ok(duringOutage.length >= 25, `outage checks: ${duringOutage.length}`);
    const targets = new Set(duringOutage.map((s) => s.target));
    assert.equal(targets.size, 1, '..data never moved during the outage');
    for (const s of duringOutage) assert.deepEqual(s.versions, KEYS.map(() => KILL_AFTER), 'last good files in place during the outage');
    assert.ok(acks[KILL_AFTER]!.attempts > 1, 'the writer was held up by the outage');
    assert.ok(acks[KILL_AFTER]!.ackAt >= restartedAt - 1000);

    // Every write is covered: a projection of it (or of a later write) appeared after its ack.
    const latencies = acks.map(({ n, ackAt }) => {
      const seen = outage.firstSeen.find(([, v]) => v >= n);
      assert.ok(seen, `write ${n} never reached the files`);
      return { n, ms: Math.max(0, seen[0] - ackAt) };
    });
    const steady = latencies.filter((l) => l.n !== KILL_AFTER + 1).map((l) => l.ms);
    const afterRestart = latencies.find((l) => l.n === KILL_AFTER + 1)!.ms;

    // In order, and only states etcd had: the daemon's projections of the object.
    const lines = logLines(d.log);
    const projected = lines.filter((l) => l.msg === 'object written' && l.object === 'configmaps/default/outage').map((l) => l.revision as number);
    const known = new Set([seedRev, ...acks.map((a) => a.revision)]);
    assert.deepEqual(projected.filter((r) => !known.has(r)), [], 'every projection is the state of a write');
    for (let i = 1; i < projected.length; i++) assert.ok(projected[i]! > projected[i - 1]!, `projection revisions increase (${projected[i - 1]} then ${projected[i]})`);
    assert.equal(projected.at(-1), acks.at(-1)!.revision);
    const relists = lines.filter((l) => l.msg === 'listed etcd; reconciling everything').length;
    assert.equal(relists, 1, 'resumed by watch from the last applied revision, no re-list');
    const retries = lines.filter((l) => l.msg === 'etcd unavailable; keeping the last good state, retrying');
    assert.ok(retries.length > 0);
    assert.ok(d.running, 'daemon alive');

    const gaps = outage.firstSeen.map(([at], i) => (i === 0 ? 0 : at - outage.firstSeen[i - 1]![0]));
    const gapsOutsideOutage = gaps.filter((_, i) => i > 0 && !(outage.firstSeen[i - 1]![0] <= restartedAt && outage.firstSeen[i]![0] >= killAt));
    t.diagnostic(`writes ${acks.length} (${acks.reduce((s, a) => s + a.attempts, 0) - acks.length} failed attempts during the outage); etcd down ${restartedAt - killAt} ms`);
    t.diagnostic(`reader: ${outage.passes} passes judged (${outage.consistent} consistent, ${outage.straddled} straddled), ${outage.reads} file reads; torn 0, mixed 0, backwards 0`);
    t.diagnostic(`versions seen by the reader: ${outage.firstSeen.length} of ${WRITES + 1}; projections in the daemon log: ${projected.length} (the rest coalesced into a later projection)`);
    t.diagnostic(`put ack → file: p50 ${percentile(steady, 0.5)} ms, p99 ${percentile(steady, 0.99)} ms, max ${Math.max(...steady)} ms; first write after etcd returned: ${afterRestart} ms (etcd healthy → write ${KILL_AFTER + 1} acked ${acks[KILL_AFTER]!.ackAt - restartedAt} ms)`);
    t.diagnostic(`longest gap between new versions outside the outage: ${Math.max(...gapsOutsideOutage)} ms; daemon retried ${retries.length} times, re-lists after start: ${relists - 1}`);
    // Nothing stray below the object dir: ..data, one payload dir, the keys.
    assert.equal(fs.readdirSync(objDir).length, KEYS.length + 2);
    assert.deepEqual(walk(d.dir).filter((p) => !p.startsWith(d.root) && p !== d.configFile), []);
  } finally {
    await sampler?.stop().catch(() => undefined);
    await restart?.catch(() => undefined);
    writer.close();
    await d.cleanup();
    await etcd.stop();
  }
});

test('daemon restarted while etcd is down: files stay, nothing is pruned; converges once etcd is back', async (t) => {
  const etcd = await startEtcd();
  const writer = writerClient([etcd.endpoint]);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] } });
  let etcdDown = false;
  try {
    await commit(writer, [[key('stays', 'k'), 'v1'], [key('changes', 'k'), 'v1'], [key('deleted', 'k'), 'v1']]);
    d.start();
    await d.ready();
    await until(() => ['stays', 'changes', 'deleted'].every((o) => fs.existsSync(d.file('configmaps', 'default', o, 'k'))), 'seed projected');
    assert.equal(await d.signal('SIGKILL'), null);
    // Changes the daemon has not seen, then etcd goes away before it comes back.
    await commit(writer, [[key('changes', 'k'), 'v2'], [key('created', 'k'), 'v1']], [key('deleted', 'k')]);
    await etcd.kill('SIGKILL');
    etcdDown = true;
    const before = walk(d.root).sort();
    const from = d.log.length;
    d.start();
    await until(() => d.log.slice(from).includes('etcd unavailable; keeping the last good state, retrying'), 'daemon up, etcd unreachable');
    await sleep(3000);
    assert.ok(d.running);
    assert.ok(!d.log.slice(from).includes('listed etcd'));
    const whileDown = walk(d.root).sort();
    const removals = logLines(d.log.slice(from)).filter((l) => l.msg === 'files removed').map((l) => l.id);
    t.diagnostic(`while etcd was unreachable the restarted daemon removed: ${removals.length ? removals.join(', ') : 'nothing'}`);
    // Found by this test (every object dir was removed ~60 ms after start: chokidar's
    // initial-scan events became drift hints reconciled against an empty store); fixed in 7e2e5ae.
    assert.deepEqual(whileDown, before, 'nothing pruned, nothing written while etcd is unreachable');
    await etcd.start();
    etcdDown = false;
    const back = Date.now();
    await until(() => !fs.existsSync(d.file('configmaps', 'default', 'deleted')), 'deleted object pruned after the first list', 15_000);
    await until(() => readOr(d.file('configmaps', 'default', 'changes', 'k')) === 'v2' && readOr(d.file('configmaps', 'default', 'created', 'k')) === 'v1', 'converged');
    await until(() => readOr(d.file('configmaps', 'default', 'stays', 'k')) === 'v1', 'the unchanged object in place');
    t.diagnostic(`converged ${Date.now() - back} ms after etcd came back; ${logLines(d.log.slice(from)).filter((l) => l.msg === 'etcd unavailable; keeping the last good state, retrying').length} retries while it was down`);
  } finally {
    writer.close();
    await d.cleanup();
    // The harness's kill() waits for an exit that already happened when the process died of a signal.
    if (etcdDown) await etcd.start().catch(() => undefined);
    await etcd.stop();
  }
});

test('etcd hangs (SIGSTOP) for 6 s, then answers again: the watch comes back once and stays up; a put after it is applied', async (t) => {
  const etcd = await startEtcd();
  const writer = writerClient([etcd.endpoint]);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] } });
  let stopped = false;
  try {
    await commit(writer, [[key('hang', 'k'), 'v1']]);
    d.start();
    await d.ready();
    await until(() => readOr(d.file('configmaps', 'default', 'hang', 'k')) === 'v1', 'seed projected');
    process.kill(etcd.pid()!, 'SIGSTOP');
    stopped = true;
    await sleep(6000);
    process.kill(etcd.pid()!, 'SIGCONT');
    stopped = false;
    await until(() => d.log.includes('etcd reconnected after'), 'the watch back after the hang', 15_000);
    const from = d.log.length;
    // Found here: the stalled watch closed every channel to the member (etcd3's resetAllServices);
    // the status lease's keepalive stream, left on the half-closed connection, died at its next
    // keepalive ping, etcd3 closed the channels again under the new watch, and so on: the watch
    // was dropped every 10 s for good ("14 UNAVAILABLE: Connection dropped"). One keepalive period and a margin:
    await sleep(12_000);
    await commit(writer, [[key('hang', 'k'), 'v2']]);
    await until(() => readOr(d.file('configmaps', 'default', 'hang', 'k')) === 'v2', 'a put after the hang projected');
    const drops = logLines(d.log.slice(from)).filter((l) => l.level >= 40);
    t.diagnostic(`warnings in the 12 s after the watch came back: ${drops.length}`);
    assert.deepEqual(drops.map((l) => `${l.msg}: ${l.err}`), [], 'no warning (no dropped watch) once etcd answers again');
  } finally {
    if (stopped) process.kill(etcd.pid()!, 'SIGCONT');
    writer.close();
    await d.cleanup();
    await etcd.stop();
  }
});
