/**
 * history and rollback end to end: the built CLI as a child process against a real
 * etcd. A 5-key config object changed across 3 revisions (binary values, a delete,
 * a new key) is listed revision by revision and rolled back byte for byte in one
 * transaction; the guard, the 128-op limit, a secret re-seal and compaction too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { runCli, type CliRun } from './harness/cli.js';
import { commitRollback, planRollback } from '../src/admin/rollback.js';
import { claimedVersion } from '../src/envelope/envelope.js';
import { OperationFailed } from '../src/errors.js';
import { GLOBAL, Keyspace } from '../src/keyspace.js';

const P = '/confsync';
const ks = new Keyspace(P);
const OBJ = `${P}/global/configmaps/default/app/`;
let etcd: EtcdHandle;
let client: Etcd3;
let dir: string;
const revs: number[] = []; // R1, R2, R3


function cli(args: string[], input = ''): CliRun {
  return runCli(args, { cwd: dir, endpoint: etcd.endpoint, input });
}

function ok(args: string[], input = ''): CliRun {
  const r = cli(args, input);
  assert.equal(r.code, 0, `confsync ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** A user mistake: exit 2, one line on stderr, no stack. */
function userError(args: string[]): string {
  const r = cli(args);
  assert.equal(r.code, 2, `expected exit 2 from ${args.join(' ')}; stdout: ${r.stdout} stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0]!;
}

/** Several puts/deletes at one revision (an always-true guard: a key that never exists). */
async function txn(puts: Record<string, string | Buffer>, deletes: string[] = []): Promise<number> {
  const ops = [...Object.entries(puts).map(([k, v]) => client.put(OBJ + k).value(v)), ...deletes.map((k) => client.delete().key(OBJ + k))];
  const res = await client.if(`${P}/never`, 'Create', '==', 0).then(...ops).commit();
  return Number(res.header.revision);
}

async function state(prefix = OBJ): Promise<Map<string, { value: Buffer; mod: number }>> {
  const res = await client.getAll().prefix(prefix).exec();
  return new Map(res.kvs.map((kv) => [kv.key.toString().slice(prefix.length), { value: kv.value, mod: Number(kv.mod_revision) }]));
}

const BIN1 = Buffer.from([0, 255, 1, 254, 0x1b, 0x80, 0xc3]);
const BIN2 = Buffer.from([9, 8, 7, 0, 0xff]);
const R1_VALUES: Record<string, string | Buffer> = { k1: 'v1', k2: BIN1, k3: 'three', k4: 'x'.repeat(300), k5: 'esc\x1b[31mred\u202e' };

before(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-history-'));
  revs.push(await txn(R1_VALUES));
  revs.push(await txn({ k1: 'v1-changed' }, ['k3']));
  revs.push(await txn({ k2: BIN2, k6: 'new' }));
});

after(async () => {
  client?.close();
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('history lists the 3 revisions newest first, with the keys each changed (put/delete), escaped', () => {
  const [r1, r2, r3] = revs;
  const json = JSON.parse(ok(['history', 'default/app', '-o', 'json']).stdout);
  assert.equal(json.compactRevision, 0);
  const got = json.revisions.map((r: { revision: number; changes: { key: string; type: string }[] }) => [r.revision, r.changes.map((c) => `${c.type} ${c.key}`).sort()]);
  assert.deepEqual(got, [
    [r3, ['put k2', 'put k6']],
    [r2, ['delete k3', 'put k1']],
    [r1, ['put k1', 'put k2', 'put k3', 'put k4', 'put k5']],
  ]);
  const text = ok(['history', 'default/app']).stdout;
  assert.match(text, new RegExp(`^rev ${r2}\\s+put    k1  "v1" -> "v1-changed"$`, 'm'));
  assert.match(text, /delete k3  was "three"$/m);
  assert.match(text, /put    k2  <binary, 7 bytes> -> <binary, 5 bytes>$/m);
  assert.match(text, /put    k4  \(new\) -> "x{80}"… \(300 bytes\)$/m, 'long values cut with their size');
  assert.match(text, /"esc\\x1b\[31mred\\u\{202e\}"/, 'control and bidi characters escaped');
  assert.doesNotMatch(text + JSON.stringify(json), /\x1b|\u202e/);
  // One key only.
  const k1 = JSON.parse(ok(['history', 'default/app/k1', '-o', 'json']).stdout);
  assert.deepEqual(k1.revisions.map((r: { revision: number }) => r.revision), [r2, r1]);
});

test('rollback refuses without --yes when stdin is not a terminal; nothing written', async () => {
  const before = await state();
  const line = userError(['rollback', 'default/app', '--to-revision', String(revs[0])]);
  assert.match(line, /^confsync: not a terminal: pass --yes/);
  assert.deepEqual(await state(), before);
});

test('rollback of the 5-key object to its first revision: exact bytes back, all writes at one revision', async () => {
  const head = async () => Number((await client.get(`${P}/never`).exec()).header.revision);
  const headBefore = await head();
  const r = ok(['rollback', 'default/app', '--to-revision', String(revs[0]), '--yes']);
  assert.equal(await head(), headBefore + 1, 'one etcd transaction: the revision advanced by exactly 1');
  assert.match(r.stdout, /^ {2}put    k1  "v1-changed" -> "v1"$/m);
  assert.match(r.stdout, /^ {2}put    k3  \(absent\) -> "three"$/m);
  assert.match(r.stdout, /^ {2}delete k6$/m);
  const at = Number(/rolled back 3 put\(s\), 1 delete\(s\) @ revision (\d+)/.exec(r.stdout)?.[1]);
  const now = await state();
  assert.deepEqual([...now.keys()].sort(), ['k1', 'k2', 'k3', 'k4', 'k5']);
  for (const [k, v] of Object.entries(R1_VALUES)) assert.ok(now.get(k)!.value.equals(Buffer.from(v)), `${k}: exact bytes`);
  for (const k of ['k1', 'k2', 'k3']) assert.equal(now.get(k)!.mod, at, `${k} written in the one transaction`);
  assert.equal(at, (await state()).get('k1')!.mod);
  const history = JSON.parse(ok(['history', 'default/app', '-o', 'json']).stdout);
  assert.equal(history.revisions[0].revision, at);
  assert.equal(history.revisions[0].changes.length, 4, 'one revision holds every write of the rollback');
  assert.match(ok(['rollback', 'default/app', '--to-revision', String(revs[0]), '--yes']).stdout, /nothing to do/);
});

test('a key changed or created between the diff and the commit fails the guard; nothing written', async () => {
  const ref = { kind: 'configmaps' as const, namespace: 'default', name: 'app' };
  for (const sneak of [() => client.put(`${OBJ}k1`).value('concurrent'), () => client.put(`${OBJ}k9`).value('created'), () => client.delete().key(`${OBJ}k4`)]) {
    const plan = await planRollback(client, ks, GLOBAL, ref, revs[2]!);
    assert.ok(plan.puts.length > 0);
    await sneak();
    const before = await state();
    await assert.rejects(commitRollback(client, ks, plan, new Map()), (err: Error) => err instanceof OperationFailed && /changed after the diff was read/.test(err.message));
    assert.deepEqual(await state(), before, 'nothing written');
  }
});

test('a rollback needing more than 128 operations is refused with a clear message', async () => {
  const big = `${P}/global/configmaps/default/big/`;
  const empty = Number((await client.put(`${P}/marker`).value('m').exec()).header.revision);
  for (const half of [0, 1]) {
    const ops = Array.from({ length: 65 }, (_, i) => client.put(`${big}k${half * 65 + i}`).value('v'));
    await client.if(`${P}/never`, 'Create', '==', 0).then(...ops).commit();
  }
  assert.match(userError(['rollback', 'default/big', '--to-revision', String(empty), '--yes']), /130 writes .* etcd allows 128/);
  assert.equal((await state(big)).size, 130);
});

test('secret rollback: refused without --identity; with it the old value is re-sealed (a new envelope), never printed', async () => {
  const id = path.join(dir, 'a.key');
  ok(['keygen', '--out', id, '--register', '--cluster', 'a']);
  ok(['recipients', 'pull', '--yes']);
  const set1 = ok(['secret', 'set', 'default/db/password'], 'old-plain-s3cret');
  const rs = Number(/@ revision (\d+)/.exec(set1.stdout)?.[1]);
  ok(['secret', 'set', 'default/db/password'], 'new-plain-s3cret');
  const key = `${P}/global/secrets/default/db/password`;
  const oldEnvelope = etcd.ctl('get', '--print-value-only', `--rev=${rs}`, key).trim();

  const hist = ok(['history', 'default/db', '--kind', 'secrets']);
  assert.match(hist.stdout, /put    password  <sealed to a; \d+ bytes> -> <sealed to a; \d+ bytes>/);
  assert.match(userError(['rollback', 'default/db', '--kind', 'secrets', '--to-revision', String(rs), '--yes']), /--identity FILE is required/);

  const r = ok(['rollback', 'default/db', '--kind', 'secrets', '--to-revision', String(rs), '--yes', '--identity', id]);
  assert.match(r.stdout, /put    password  \(sealed; re-sealed to a\)/);
  const all = r.stdout + r.stderr + hist.stdout + hist.stderr;
  assert.ok(!all.includes('plain-s3cret'), 'no plaintext in the output');
  const now = etcd.ctl('get', '--print-value-only', key).trim();
  assert.match(now, /^confsync:v2:/);
  assert.notEqual(now, oldEnvelope, 'a fresh envelope, not the old one copied back');
  const newest = etcd.ctl('get', '--print-value-only', `--rev=${rs + 1}`, key).trim();
  assert.ok(claimedVersion(now)! > claimedVersion(newest)!, 'an old value under a NEW sealed version: daemons do not take it for a replay');
  assert.equal(ok(['secret', 'get', 'default/db/password', '--identity', id]).stdout, 'old-plain-s3cret');
});

test('after compaction: history says what was compacted; rollback to a compacted revision is refused', async () => {
  etcd.ctl('compaction', String(revs[1]));
  const text = ok(['history', 'default/app']);
  assert.match(text.stdout, new RegExp(`history before revision ${revs[1]} was compacted`));
  const json = JSON.parse(ok(['history', 'default/app', '-o', 'json']).stdout);
  assert.equal(json.compactRevision, revs[1]);
  assert.ok(json.revisions.every((r: { revision: number }) => r.revision > revs[1]!), 'only revisions etcd still holds');
  assert.ok(json.revisions.some((r: { revision: number }) => r.revision === revs[2]));
  assert.match(userError(['rollback', 'default/app', '--to-revision', String(revs[0]), '--yes']), /etcd has compacted that revision/);
});
