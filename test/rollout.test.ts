/**
 * Staged rollouts (issue 16) end to end: one real etcd, six real daemons (one per
 * cluster, files sink, each with its own identity), the real CLI as a child process.
 * Waves: canary = east-*, eu = eu-*, rest = * (two clusters each). Every check is
 * on disk: the files the daemons project.
 *
 * east-2's daemon has limits.maxObjectKeys 1, so an object with a second key is an
 * error there (held, reported in its status): the injected failure of wave 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { stringify } from 'yaml';
import { envelopeRecipients } from '../src/envelope/envelope.js';
import { generateIdentity, parseRecipient, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { assignClusters, parseWaves, placedClusters } from '../src/admin/rollout-plan.js';
import { parseRollout } from '../src/admin/rollout-record.js';
import { abortRollout } from '../src/admin/rollout-control.js';
import { Keyspace } from '../src/keyspace.js';
import { runCli } from './harness/cli.js';
import { DaemonProcess, MAIN, readOr, until } from './harness/daemon.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';

const P = '/confsync';
const CLUSTERS = ['east-1', 'east-2', 'eu-1', 'eu-2', 'us-1', 'us-2'];
const WAVES = 'canary=east-*;eu=eu-*;rest=*';
const WAVE_OF: Record<string, number> = { 'east-1': 0, 'east-2': 0, 'eu-1': 1, 'eu-2': 1, 'us-1': 2, 'us-2': 2 };

let etcd: EtcdHandle;
let etcdc: Etcd3;
let dir: string;
const daemons = new Map<string, DaemonProcess>();
const fingerprint = new Map<string, string>();

before(async () => {
  etcd = await startEtcd();
  etcdc = new Etcd3({ hosts: etcd.endpoint });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-rollout-'));
  const pinned: Record<string, string> = {};
  for (const c of CLUSTERS) {
    const id = generateIdentity();
    const r = recipientOf(id.publicKey).text;
    await writeIdentityFile(path.join(dir, `${c}.key`), id);
    await etcdc.put(`${P}/recipients/${c}`).value(r);
    pinned[c] = r;
    fingerprint.set(c, r);
  }
  fs.writeFileSync(path.join(dir, 'confsync-recipients.yaml'), stringify({ clusters: pinned, admins: [] }));
  for (const c of CLUSTERS) {
    const d = new DaemonProcess({
      cluster: c,
      etcd: { endpoints: [etcd.endpoint] },
      identity: path.join(dir, `${c}.key`),
      // A long lease: the SIGSTOPped daemon below must stay "live but behind", whatever the machine's load.
      status: { intervalSeconds: 0.2, leaseTtlSeconds: 120 },
      ...(c === 'east-2' ? { limits: { maxObjectKeys: 1 } } : {}),
    });
    daemons.set(c, d.start());
  }
  await Promise.all([...daemons.values()].map((d) => d.ready()));
  await until(async () => (await etcdc.getAll().prefix(`${P}/status/`).keys()).length === CLUSTERS.length, 'six status keys');
});

after(async () => {
  etcdc?.close();
  await Promise.all([...daemons.values()].map((d) => d.cleanup()));
  await etcd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const cli = (args: string[], input?: string) => runCli(args, { cwd: dir, endpoint: etcd.endpoint, input });

/** The CLI in the background (a rollout runs for seconds): kill it, or await its end. */
function background(args: string[]) {
  const proc = spawn(process.execPath, [MAIN, ...args], { cwd: dir, env: { ...process.env, CONFSYNC_ENDPOINTS: etcd.endpoint }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => proc.once('close', (code) => resolve({ code, stdout, stderr })));
  return { proc, done, out: () => stdout + stderr };
}

const file = (c: string, name: string, key: string, kind: 'configmaps' | 'secrets' = 'configmaps') => readOr(daemons.get(c)!.file(kind, 'default', name, key));

async function record(id: string): Promise<any> {
  const v = await etcdc.get(`${P}/rollouts/${id}`).string();
  return v === null ? undefined : JSON.parse(v);
}

/** The id the CLI printed first (`rollout <id>: …`). */
const idIn = (out: string) => out.match(/^rollout (\d{8}-\d{6}-[0-9a-f]{4}):/m)?.[1];

/** Waits until the rollout's record satisfies `probe`. */
async function recordWhere(bg: ReturnType<typeof background>, probe: (r: any) => boolean, what: string, timeoutMs = 20_000): Promise<{ id: string; r: any }> {
  return until(async () => {
    const id = idIn(bg.out());
    const r = id && (await record(id));
    return r && probe(r) ? { id: id!, r } : undefined;
  }, what, timeoutMs);
}

/**
 * Reads every cluster's file every few ms and keeps each distinct value in order:
 * the test then asserts the only transition ever seen is old → new.
 */
function reader(name: string, key: string, kind: 'configmaps' | 'secrets' = 'configmaps') {
  const seen = new Map<string, (string | undefined)[]>(CLUSTERS.map((c) => [c, []]));
  const tick = () => {
    for (const c of CLUSTERS) {
      const v = file(c, name, key, kind);
      const list = seen.get(c)!;
      if (list.at(-1) !== v) list.push(v);
    }
  };
  tick();
  const timer = setInterval(tick, 5);
  return {
    seen,
    stop() {
      clearInterval(timer);
      tick();
      return seen;
    },
  };
}

async function seed(name: string, key: string, value: string): Promise<void> {
  await etcdc.put(`${P}/global/configmaps/default/${name}/${key}`).value(value);
  await until(() => CLUSTERS.every((c) => file(c, name, key) === value), `${name}/${key} on every cluster`);
}

/** Each cluster whose wave index is ≤ `upTo` has `now`, the others `old`. */
function assertWaves(name: string, key: string, upTo: number, now: string, old: string): void {
  for (const c of CLUSTERS) assert.equal(file(c, name, key), WAVE_OF[c]! <= upTo ? now : old, `${c} after wave ${upTo + 1}`);
}

async function overridesOf(name: string, kind = 'configmaps'): Promise<string[]> {
  const keys = await etcdc.getAll().prefix(`${P}/clusters/`).keys();
  return keys.filter((k) => k.includes(`/${kind}/default/${name}/`));
}

test('three waves over six clusters: each wave on disk in turn, then promotion with no file flipping back', async () => {
  await seed('app', 'greeting', 'old');
  const watch = reader('app', 'greeting');
  const t0 = Date.now();
  // 2 s gates: the test must see each wave's gate before the next wave starts, even on a loaded machine.
  const bg = background(['rollout', 'start', 'default/app', '--set', 'greeting=new', '--waves', WAVES, '--gate-seconds', '2']);
  const times: string[] = [];
  for (let w = 0; w < 3; w++) {
    const { r } = await recordWhere(bg, (r) => r.current === w && r.waves[w].phase === 'gating', `wave ${w + 1} gating`);
    // Gating starts once every node of the wave reported the wave's revision: the files are there.
    assertWaves('app', 'greeting', w, 'new', 'old');
    times.push(`wave ${w + 1} applied ${Date.parse(r.waves[w].appliedAt) - Date.parse(r.waves[w].startedAt)} ms after its write`);
  }
  const end = await bg.done;
  const cliMs = Date.now() - t0;
  assert.equal(end.code, 0, end.stderr);
  assert.match(end.stdout, /promoted at revision \d+: global keys set and overrides deleted in one transaction/);
  assert.match(end.stdout, /wave 1\/3 canary: nodes applied 2\/2/);
  await until(() => CLUSTERS.every((c) => file(c, 'app', 'greeting') === 'new'), 'all new');
  const seen = watch.stop();
  for (const c of CLUSTERS) assert.deepEqual(seen.get(c), ['old', 'new'], `${c} saw old then new, nothing else`);
  assert.equal(await etcdc.get(`${P}/global/configmaps/default/app/greeting`).string(), 'new');
  assert.deepEqual(await overridesOf('app'), [], 'promotion deleted every override');
  assert.equal(await etcdc.get(`${P}/rollouts/@active/configmaps/default/app`).string(), null, 'lock released');
  const id = idIn(end.stdout)!;
  const status = JSON.parse(cli(['rollout', 'status', id, '-o', 'json']).stdout);
  assert.equal(status.state, 'promoted');
  assert.deepEqual(status.waves.map((w: any) => w.clusters), [['east-1', 'east-2'], ['eu-1', 'eu-2'], ['us-1', 'us-2']]);
  assert.ok(!JSON.stringify(status).includes('"values"'), 'status shows no values');
  assert.match(cli(['rollout', 'ls']).stdout, new RegExp(`^${id}\\s+configmaps/default/app\\s+promoted`, 'm'));
  const text = cli(['rollout', 'status', id]).stdout;
  assert.match(text, /^WAVE\s+CLUSTERS\s+PHASE/m);
  assert.match(text, /^eu\s+eu-1,eu-2\s+done\s+\d+\s+2\/2/m);
  // rollouts/ is part of the layout: lint finds nothing wrong, and no daemon reads or reports it.
  const lint = cli(['lint']);
  assert.equal(lint.code, 0, lint.stdout + lint.stderr);
  for (const [c, d] of daemons) assert.ok(!d.log.includes('rollouts/'), `${c} never mentions rollouts/`);
  // No timer assertion: the figures go to the report.
  const waveLines = end.stdout.split('\n').filter((l) => / done in |live node\(s\) applied/.test(l));
  console.log(`# rollout figures: ${times.join('; ')}; the CLI, 3 waves with 2 s gates + promotion: ${cliMs} ms (${waveLines.join(' | ')})`);
});

test('abort in wave 2 returns every cluster to the old value; a second rollout of the object is refused meanwhile', async () => {
  await seed('ab', 'k', 'old');
  // eu-2's daemon is stopped: wave 2 stays in its apply wait (eu-1 has the value, eu-2 not yet) for as long as the test needs.
  const eu2 = (daemons.get('eu-2') as unknown as { proc: { pid: number } }).proc.pid;
  process.kill(eu2, 'SIGSTOP');
  try {
    const bg = background(['rollout', 'start', 'default/ab', '--set', 'k=new', '--waves', WAVES, '--gate-seconds', '1', '--apply-timeout', '300']);
    const { id } = await recordWhere(bg, (r) => r.current === 1 && r.waves[1].phase === 'applying', 'wave 2 applying');
    await until(() => file('eu-1', 'ab', 'k') === 'new', 'eu-1 has the value');
    for (const c of CLUSTERS) assert.equal(file(c, 'ab', 'k'), ['east-1', 'east-2', 'eu-1'].includes(c) ? 'new' : 'old', c);

    const second = cli(['rollout', 'start', 'default/ab', '--set', 'k=other', '--waves', WAVES]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`configmaps/default/ab already has a rollout in progress: ${id}`));

    // The library's abort, in this process: the figure is the transaction's effect, not Node's start-up (the CLI's abort is run in the tests below).
    const t0 = Date.now();
    const aborting = abortRollout(etcdc, new Keyspace(P), id, 60_000);
    await until(() => ['east-1', 'east-2', 'eu-1'].every((c) => file(c, 'ab', 'k') === 'old'), 'the running nodes back to old', 20_000);
    const ms = Date.now() - t0;
    process.kill(eu2, 'SIGCONT');
    const abort = await aborting;
    assert.equal(abort.rollout.state, 'aborted');
    assert.deepEqual([abort.applied, abort.nodes], [4, 4], 'every node of the waves begun applied the abort');
    await until(() => CLUSTERS.every((c) => file(c, 'ab', 'k') === 'old'), 'every cluster on old');
    const end = await bg.done;
    assert.equal(end.code, 1);
    assert.match(end.stderr, new RegExp(`rollout ${id} aborted: aborted by an operator\\n$`));
    assert.deepEqual(await overridesOf('ab'), []);
    assert.equal(await etcdc.get(`${P}/global/configmaps/default/ab/k`).string(), 'old');
    console.log(`# abort in wave 2: the running nodes' files back to old ${ms} ms after abortRollout was called`);
  } finally {
    process.kill(eu2, 'SIGCONT');
  }
});

test('an error in wave 1 halts the rollout: no cluster of wave 2 or 3 ever sees the value', async () => {
  await seed('big', 'k', 'old');
  const watch = reader('big', 'k');
  const big = 'two-keys'; // with key k2 the object has 2 keys: over east-2's limits.maxObjectKeys (1)
  const r = cli(['rollout', 'start', 'default/big', '--set', `k=${big}`, '--set', 'k2=x', '--waves', WAVES, '--gate-seconds', '2']);
  const seen = watch.stop();
  assert.equal(r.code, 1, r.stdout);
  const id = idIn(r.stdout)!;
  assert.match(r.stderr, new RegExp(`^confsync: rollout ${id} halted: wave canary: 1 error\\(s\\), over --max-errors 0: east-2/n1: .*maxObjectKeys.*; confsync rollout resume ${id} or abort ${id}\\n$`));
  for (const c of ['eu-1', 'eu-2', 'us-1', 'us-2']) assert.deepEqual(seen.get(c), ['old'], `${c} never saw the value`);
  await until(() => file('east-1', 'big', 'k') === big, 'the canary without the limit has it');
  assert.equal(file('east-2', 'big', 'k'), 'old', 'east-2 keeps its last good state');
  assert.equal((await record(id)).state, 'halted');

  // Resume re-checks the wave: the error is still open, so it halts again.
  const again = cli(['rollout', 'resume', id]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /halted: wave canary: 1 error\(s\)/);
  const abort = cli(['rollout', 'abort', id]);
  assert.equal(abort.code, 0, abort.stderr);
  await until(() => file('east-1', 'big', 'k') === 'old', 'east-1 back to old');
});

test('SIGKILL of the CLI at each step, then resume: the same end state as an uninterrupted rollout; a node that does not apply halts', async () => {
  await seed('kill', 'k', 'old');
  const watch = reader('kill', 'k');
  // Step 1: wave 1 written but not applied (east-1's daemon is stopped), the CLI waiting: killed.
  const east1 = daemons.get('east-1')!;
  const pid = (east1 as unknown as { proc: { pid: number } }).proc.pid;
  process.kill(pid, 'SIGSTOP');
  let bg = background(['rollout', 'start', 'default/kill', '--set', 'k=new', '--waves', WAVES, '--gate-seconds', '2', '--apply-timeout', '2']);
  const { id } = await recordWhere(bg, (r) => r.waves[0].phase === 'applying', 'wave 1 applying');
  bg.proc.kill('SIGKILL');
  await bg.done;
  // Resumed while east-1 is still stopped: it does not apply within --apply-timeout, so the rollout halts.
  const stuck = cli(['rollout', 'resume', id]);
  process.kill(pid, 'SIGCONT');
  assert.equal(stuck.code, 1);
  assert.match(stuck.stderr, new RegExp(`rollout ${id} halted: wave canary: not applied within --apply-timeout 2s \\(revision \\d+\\): east-1/n1@\\d+; confsync rollout resume`));
  assert.equal(file('us-1', 'kill', 'k'), 'old');
  // Steps 2-4: killed in the gate of each wave in turn, resumed each time (the first resume also un-halts).
  for (let w = 0; w < 3; w++) {
    bg = background(['rollout', 'resume', id]);
    await until(async () => {
      const r = await record(id);
      return r.current === w && r.waves[w].phase === 'gating';
    }, `wave ${w + 1} gating`);
    assertWaves('kill', 'k', w, 'new', 'old');
    // Wave 2's CLI gets Ctrl-C instead: it leaves the record as it is and says how to resume.
    bg.proc.kill(w === 1 ? 'SIGINT' : 'SIGKILL');
    const killed = await bg.done;
    if (w === 1) {
      assert.equal(killed.code, 130);
      assert.match(killed.stderr, new RegExp(`interrupted; rollout ${id} stays where it is in etcd, with no CLI driving it: confsync rollout resume ${id}`));
    }
  }
  const end = cli(['rollout', 'resume', id]);
  assert.equal(end.code, 0, end.stderr);
  assert.match(end.stdout, new RegExp(`rollout ${id} promoted`));
  await until(() => CLUSTERS.every((c) => file(c, 'kill', 'k') === 'new'), 'all new');
  for (const [c, values] of watch.stop()) assert.deepEqual(values, ['old', 'new'], c);
  assert.deepEqual(await overridesOf('kill'), []);
  assert.equal(await etcdc.get(`${P}/global/configmaps/default/kill/k`).string(), 'new');
  const again = cli(['rollout', 'resume', id]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /is promoted: nothing to resume/);
});

test('pause stops the driving CLI; resume carries on; a global key changed by someone else halts; resume is then refused, abort cleans up', async () => {
  await seed('race', 'k', 'old');
  const bg = background(['rollout', 'start', 'default/race', '--set', 'k=new', '--waves', WAVES, '--gate-seconds', '30']);
  const { id } = await recordWhere(bg, (r) => r.waves[0].phase === 'gating', 'wave 1 gating');
  assert.equal(cli(['rollout', 'pause', id]).code, 0);
  const paused = await bg.done;
  assert.equal(paused.code, 1);
  assert.match(paused.stderr, new RegExp(`rollout ${id} paused: paused by an operator; confsync rollout resume ${id} or abort ${id}\\n$`));
  assertWaves('race', 'k', 0, 'new', 'old');

  const resumed = background(['rollout', 'resume', id]);
  await until(async () => (await record(id)).state === 'running', 'running again');
  await etcdc.put(`${P}/global/configmaps/default/race/k`).value('someone-else');
  const end = await resumed.done;
  assert.equal(end.code, 1);
  assert.match(end.stderr, new RegExp(`rollout ${id} halted: global/configmaps/default/race/k was changed by someone else \\(mod revision \\d+ at start, \\d+ now\\); confsync rollout abort ${id}\\n$`));
  const resume = cli(['rollout', 'resume', id]);
  assert.equal(resume.code, 2);
  assert.match(resume.stderr, /cannot resume over someone else's change/);
  assert.equal(cli(['rollout', 'abort', id]).code, 0);
  await until(() => CLUSTERS.every((c) => file(c, 'race', 'k') === 'someone-else'), "everyone on the other writer's value");
});

test('secrets: each wave sealed to its own clusters only, promotion to every pinned recipient; no plaintext in etcd or logs', async () => {
  const secret = 'rollout-secret-5e1d0c';
  fs.writeFileSync(path.join(dir, 'pw'), secret);
  assert.match(cli(['rollout', 'start', 'default/db', '--secret', '--set', `pw=${secret}`, '--waves', WAVES]).stderr, /never taken from the command line/);
  const bg = background(['rollout', 'start', 'default/db', '--secret', '--file', 'pw=pw', '--waves', WAVES, '--gate-seconds', '2', '-o', 'json']);
  const { id } = await recordWhere(bg, (r) => r.waves[0].phase === 'gating', 'wave 1 gating');
  for (const c of ['east-1', 'east-2']) {
    const v = await etcdc.get(`${P}/clusters/${c}/secrets/default/db/pw`).buffer();
    assert.deepEqual(envelopeRecipients(v!), [fpOf(c)], `${c}'s override is sealed to ${c} alone`);
    assert.equal(file(c, 'db', 'pw', 'secrets'), secret);
  }
  for (const c of ['eu-1', 'us-1']) assert.equal(file(c, 'db', 'pw', 'secrets'), undefined);
  const end = await bg.done;
  assert.equal(end.code, 0, end.stderr);
  const json = JSON.parse(end.stdout);
  assert.equal(json.state, 'promoted');
  assert.equal(json.id, id);
  assert.equal(json.sealed, undefined, '-o json shows no envelopes');
  const global = await etcdc.get(`${P}/global/secrets/default/db/pw`).buffer();
  assert.deepEqual(envelopeRecipients(global!).sort(), CLUSTERS.map(fpOf).sort(), 'promotion sealed to every pinned cluster');
  await until(() => CLUSTERS.every((c) => file(c, 'db', 'pw', 'secrets') === secret), 'every cluster opened it');
  const everything = await etcdc.getAll().prefix(`${P}/`).strings();
  assert.ok(!Object.values(everything).some((v) => v.includes(secret)), 'no plaintext anywhere in etcd (the rollout record included)');
  assert.ok(JSON.stringify(await record(id)).includes('confsync:v2:'), 'the record keeps envelopes');
  for (const [c, d] of daemons) assert.ok(!d.log.includes(secret), `${c}'s log has no plaintext`);
  assert.ok(!end.stdout.includes(secret) && !end.stderr.includes(secret));
});

/** A pinned cluster's key fingerprint, as envelopes list their recipients. */
const fpOf = (cluster: string) => parseRecipient(fingerprint.get(cluster)!).id;

test('start refuses what it cannot stage, in one line naming the cause, and writes nothing', async () => {
  const refused = (args: string[], re: RegExp) => {
    const r = cli(['rollout', 'start', ...args]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  };
  refused(['default/x', '--rm', 'k', '--waves', WAVES], /--rm cannot be staged: a cluster override can replace a global key but not hide it/);
  await etcdc.put(`${P}/clusters/eu-2/configmaps/default/own/k`).value('eu-2 keeps this');
  refused(['default/own', '--set', 'k=v', '--waves', WAVES], /clusters\/eu-2\/configmaps\/default\/own\/k already exists: cluster eu-2 has its own value/);
  await etcdc.put(`${P}/global/configmaps/default/placed/@meta`).value(JSON.stringify({ placement: { clusters: ['east-*', 'eu-*'] } }));
  // us-* are not placed: the last wave would be empty, not a wave creating the object there.
  refused(['default/placed', '--set', 'k=v', '--waves', WAVES], /wave "rest" \(\*\) matches no cluster left by the waves before it; known clusters: east-1, east-2, eu-1, eu-2$/m);
  assert.deepEqual((await etcdc.getAll().prefix(`${P}/rollouts/`).keys()).filter((k) => k.includes('/@active/')), [], 'no lock left behind');
  assert.deepEqual([...(await overridesOf('x')), ...(await overridesOf('placed'))], []);

  // The same checks, in-process (no CLI start each): wave syntax, first match wins, clusterSelector.
  assert.throws(() => parseWaves('canary'), /wave 1 "canary": expected NAME=GLOB/);
  assert.throws(() => parseWaves('a=x;a=y'), /wave "a" is named twice/);
  assert.throws(() => parseWaves('Big=x'), /must be a DNS-1123 label/);
  const { waves, unassigned } = assignClusters(parseWaves('one=eu-1;eu=eu-*,east-1'), CLUSTERS);
  assert.deepEqual(waves.map((w) => w.clusters), [['eu-1'], ['east-1', 'eu-2']]);
  assert.deepEqual(unassigned, ['east-2', 'us-1', 'us-2']);
  assert.throws(() => assignClusters(parseWaves('all=*;more=eu-*'), CLUSTERS), /wave "more" \(eu-\*\) matches no cluster left/);
  await etcdc.put(`${P}/global/configmaps/default/placed/@meta`).value(JSON.stringify({ placement: { clusterSelector: { matchLabels: { tier: 'gold' } } } }));
  // A record is input from etcd: one that would make the CLI write outside an object's keys is refused.
  const good = JSON.parse(JSON.stringify({ id: '20261205-000000-abcd', ref: { kind: 'configmaps', namespace: 'default', name: 'a' }, keys: ['k'], globalMods: { k: '0' }, waves: [{ name: 'w', clusters: ['eu-1'] }], current: 0, state: 'running', options: { gateSeconds: 1, maxErrors: 0, applyTimeoutSeconds: 1 } }));
  assert.equal(parseRollout(JSON.stringify(good), good.id).id, good.id);
  assert.throws(() => parseRollout(JSON.stringify({ ...good, waves: [{ name: 'w', clusters: ['../../global'] }] }), good.id), /not a rollout record confsync can use \(waves\)/);
  assert.throws(() => parseRollout(JSON.stringify({ ...good, keys: ['../x'] }), good.id), /\(keys\)/);
  assert.throws(() => parseRollout(JSON.stringify({ ...good, waves: [{ name: 'w\x1b]0;pwned\x07', clusters: ['eu-1'] }] }), good.id), /\(waves\)/);
  assert.throws(() => parseRollout('{', good.id), /\(not JSON\)/);
  await assert.rejects(placedClusters(etcdc, new Keyspace(P), { kind: 'configmaps', namespace: 'default', name: 'placed' }, CLUSTERS), /placement.clusterSelector .* not supported/);
});
