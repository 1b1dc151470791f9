/**
 * The secret verbs end to end: the built CLI as a child process against a real
 * etcd (keygen --register → recipients pull → secret set/get, seal + etcdctl put),
 * and the user-mistake paths: exit 2, one line on stderr, no stack, no value echoed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { MAIN } from './harness/daemon.js';
import { parseRecipient } from '../src/envelope/identity.js';

const P = '/confsync';
let etcd: EtcdHandle;
let dir: string;
const recipients: Record<string, string> = {};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], input?: string | Buffer): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    cwd: dir,
    input: input ?? '',
    encoding: 'utf8',
    env: cleanEnv({ CONFSYNC_ENDPOINTS: etcd.endpoint }),
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The caller's CONFSYNC_* settings must not leak into the test. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  return { ...env, ...extra };
}

function ok(args: string[], input?: string | Buffer): Run {
  const r = cli(args, input);
  assert.equal(r.code, 0, `confsync ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** A user mistake: exit 2, exactly one line on stderr, prefixed, no stack trace. */
function userError(args: string[], input?: string): string {
  const r = cli(args, input);
  assert.equal(r.code, 2, `expected exit 2 from ${args.join(' ')}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assert.match(lines[0]!, /^confsync: /);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:/, 'no stack trace');
  return lines[0]!;
}

const mode = (file: string) => (fs.statSync(file).mode & 0o777).toString(8);
const id = (name: string) => path.join(dir, `${name}.key`);

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-secrets-cli-'));
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('keygen for clusters a and b: 0600 files, recipient on stdout, registered in etcd', () => {
  for (const c of ['a', 'b']) {
    const r = ok(['keygen', '--out', id(c), '--register', '--cluster', c]);
    assert.match(r.stdout, /^confsync1[02-9ac-hj-np-z]{58}\n$/);
    recipients[c] = r.stdout.trim();
    assert.equal(mode(id(c)), '600');
    assert.equal(etcd.ctl('get', '--print-value-only', `${P}/recipients/${c}`).trim(), recipients[c]);
    assert.doesNotMatch(r.stdout + r.stderr, /CONFSYNC-SECRET-KEY/, 'the private key is never printed');
  }
  assert.match(userError(['keygen', '--out', id('a')]), /already exists/, 'an identity is never overwritten without --force');
  assert.match(userError(['keygen', '--out', id('x'), '--register']), /--register needs --cluster/);
});

test('recipients pull: refuses without confirmation on a non-TTY, pins with --yes, ls shows fingerprints', () => {
  const refused = userError(['recipients', 'pull']);
  assert.match(refused, /2 new cluster key\(s\) not pinned.*--yes/);
  assert.equal(fs.existsSync(path.join(dir, 'confsync-recipients.yaml')), false);

  const r = ok(['recipients', 'pull', '--yes']);
  assert.match(r.stdout, /^a\s+[0-9a-f]{16}\s+NEW$/m);
  const pinned = parse(fs.readFileSync(path.join(dir, 'confsync-recipients.yaml'), 'utf8'));
  assert.deepEqual(pinned, { clusters: { a: recipients.a, b: recipients.b }, admins: [] });

  const ls = ok(['recipients', 'ls']).stdout;
  assert.match(ls, new RegExp(`^cluster\\s+a\\s+[0-9a-f]{16}\\s+${recipients.a}$`, 'm'));
  assert.match(ls, new RegExp(`^cluster\\s+b\\s+[0-9a-f]{16}\\s+${recipients.b}$`, 'm'));
  assert.match(ok(['recipients', 'pull']).stdout, /^b\s+[0-9a-f]{16}\s+pinned$/m, 'a second pull changes nothing and needs no confirmation');
});

test('secret set (global) opens for both clusters; a --cluster a secret does not open for b', () => {
  const plain = 'global-s3cret-\u00e9\n';
  const set = ok(['secret', 'set', 'default/db/password'], plain);
  assert.match(set.stdout, /global\/secrets\/default\/db\/password sealed to a, b @ revision \d+/);
  const stored = etcd.ctl('get', '--print-value-only', `${P}/global/secrets/default/db/password`);
  assert.match(stored, /^confsync:v2:/);
  assert.ok(!stored.includes('s3cret'));
  for (const c of ['a', 'b']) assert.equal(ok(['secret', 'get', 'default/db/password', '--identity', id(c)]).stdout, plain, `cluster ${c}`);

  fs.writeFileSync(path.join(dir, 'value.bin'), 'only-for-a');
  ok(['secret', 'set', 'default/db/password', '--cluster', 'a', '--file', path.join(dir, 'value.bin')]);
  assert.equal(ok(['secret', 'get', 'default/db/password', '--cluster', 'a', '--identity', id('a')]).stdout, 'only-for-a');
  const denied = userError(['secret', 'get', 'default/db/password', '--cluster', 'a', '--identity', id('b')]);
  assert.match(denied, /clusters\/a\/secrets\/default\/db\/password: envelope cannot be opened \(not-a-recipient\)/);
  assert.ok(!denied.includes('only-for-a'));

  assert.match(userError(['secret', 'set', 'default/db/password', '--cluster', 'zz'], 'x'), /cluster "zz" is not pinned/);
  const ls = ok(['secret', 'ls']).stdout;
  assert.match(ls, /^global\/secrets\/default\/db\/password\t\d+ bytes\trev \d+\tsealed to a, b$/m);
  assert.ok(!ls.includes('s3cret'));
  assert.match(ok(['secret', 'rm', 'default/db', '--cluster', 'a']).stdout, /deleted 1 key/);
});

test('confsync seal + raw etcdctl put, as an argument and through a pipe', () => {
  for (const [form, key] of [['arg', 'via-arg'], ['pipe', 'via-pipe']] as const) {
    const logical = `global/secrets/default/raw/${key}`;
    const sealCmd = `"${process.execPath}" "${MAIN}" seal --recipient ${recipients.a} --recipient ${recipients.b} --path ${logical}`;
    const put = form === 'arg' ? `etcdctl --endpoints ${etcd.endpoint} put ${P}/${logical} "$(printf %s sealed-${key} | ${sealCmd})"` : `printf %s sealed-${key} | ${sealCmd} | etcdctl --endpoints ${etcd.endpoint} put ${P}/${logical}`;
    const r = spawnSync('sh', ['-c', put], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(ok(['secret', 'get', `default/raw/${key}`, '--identity', id('b')]).stdout, `sealed-${key}`);
  }
  // Without --recipient, seal uses the pinned file for the path's scope.
  const env = ok(['seal', '--path', 'clusters/b/secrets/default/raw/k'], 'x').stdout;
  assert.match(env, /^confsync:v2:[A-Za-z0-9_-]+\n$/);
});

test('a changed registration for a pinned cluster is refused unless accepted by fingerprint', () => {
  const refusedKeygen = userError(['keygen', '--out', id('a2'), '--register', '--cluster', 'a']);
  assert.match(refusedKeygen, /recipients\/a already holds key [0-9a-f]{16}/);
  assert.equal(fs.existsSync(id('a2')), false, 'a refused registration leaves no identity file');

  const newA = ok(['keygen', '--out', id('a2'), '--register', '--cluster', 'a', '--force']).stdout.trim();
  const before = fs.readFileSync(path.join(dir, 'confsync-recipients.yaml'), 'utf8');
  const line = userError(['recipients', 'pull', '--yes']);
  assert.match(line, new RegExp(`a \\(pinned ${parseRecipient(recipients.a!).id}, registered ${parseRecipient(newA).id}\\).*--accept CLUSTER=FINGERPRINT`));
  assert.ok(!line.includes(recipients.a!) && !line.includes(newA), 'fingerprints, not whole keys');
  assert.equal(fs.readFileSync(path.join(dir, 'confsync-recipients.yaml'), 'utf8'), before, 'nothing pinned');

  ok(['recipients', 'pull', '--accept', `a=${parseRecipient(newA).id}`]);
  assert.equal(parse(fs.readFileSync(path.join(dir, 'confsync-recipients.yaml'), 'utf8')).clusters.a, newA);
  // Put it back for the tests after this one.
  const a3 = ok(['keygen', '--out', id('a3'), '--register', '--cluster', 'a', '--force']).stdout.trim();
  ok(['recipients', 'pull', '--accept', `a=${parseRecipient(a3).id}`]);
  fs.renameSync(id('a3'), id('a'));
});

test('keygen --add: several keys in one file; values sealed to either key open', () => {
  const before = ok(['keygen', '--out', id('rot')]).stdout.trim();
  const added = ok(['keygen', '--out', id('rot'), '--add']).stdout.trim();
  assert.notEqual(before, added);
  assert.equal(mode(id('rot')), '600');
  assert.equal(fs.readFileSync(id('rot'), 'utf8').match(/^CONFSYNC-SECRET-KEY-1/gm)?.length, 2);
  for (const [i, r] of [before, added].entries()) {
    const logical = `global/secrets/default/rot/k${i}`;
    const env = ok(['seal', '--recipient', r, '--path', logical], `v${i}`).stdout;
    etcd.ctl('put', `${P}/${logical}`, env.trim());
    assert.equal(ok(['secret', 'get', `default/rot/k${i}`, '--identity', id('rot')]).stdout, `v${i}`);
  }
  assert.match(userError(['keygen', '--out', id('nope'), '--add']), /--add: identity file .* cannot open \(ENOENT\)/);
});

test('bad --path and bad --recipient: exit 2, one line naming the problem', () => {
  const good = recipients.a!;
  for (const bad of ['default/db/password', '/confsync/global/secrets/default/db/pw', 'global/configmaps/default/db/pw', 'global/secrets/default/db/..x', 'global/secrets/Default/db/pw', 'clusters/A/secrets/ns/n/k']) {
    assert.match(userError(['seal', '--recipient', good, '--path', bad], 'x'), /^confsync: --path /, bad);
  }
  const flipped = good.slice(0, 20) + (good[20] === 'q' ? 'p' : 'q') + good.slice(21);
  assert.match(userError(['seal', '--recipient', good, '--recipient', flipped, '--path', 'global/secrets/default/db/pw'], 'x'), /^confsync: --recipient #2: invalid recipient: checksum mismatch/);
  const secretKey = fs.readFileSync(id('b'), 'utf8').split('\n').find((l) => l.startsWith('CONFSYNC-SECRET-KEY-1'))!;
  const line = userError(['seal', '--recipient', secretKey, '--path', 'global/secrets/default/db/pw'], 'x');
  assert.match(line, /--recipient #1: invalid recipient: this is a SECRET key/);
  assert.ok(!line.includes(secretKey.slice(21)), 'the secret key is not echoed');
  assert.match(userError(['secret', 'get', 'default/db/password']), /--identity FILE is required/);
  assert.match(userError(['secret', 'set', 'default/db', '--recipients-file', path.join(dir, 'confsync-recipients.yaml')], 'x'), /expected <namespace>\/<name>\/<key>/);
});

test('argv never accepts a secret value', () => {
  const value = 'argv-hunter2-value';
  for (const args of [
    ['secret', 'set', 'default/argv/k', value],
    ['secret', 'set', `--value=${value}`, 'default/argv/k'],
    ['secret', 'set', 'default/argv/k', '--value', value],
    ['secret', 'set', 'default/argv/k', '--', value],
  ]) {
    const line = userError(args, 'from-stdin');
    assert.ok(!line.includes(value), `value echoed: ${line}`);
    assert.match(line, /never taken from the command line/);
  }
  assert.equal(etcd.ctl('get', '--prefix', '--keys-only', `${P}/global/secrets/default/argv/`).trim(), '', 'nothing was put');
  const r = cli(['seal', '--recipient', recipients.a!, '--path', 'global/secrets/default/argv/k', value]);
  assert.notEqual(r.code, 0);
  assert.ok(!r.stderr.includes(value) && !r.stdout.includes(value));
  assert.match(ok(['secret', 'set', '--help']).stdout, /never accepted\s+as an argument/);
});

test('a plaintext value at a secrets path is reported by path, never shown', () => {
  etcd.ctl('put', `${P}/global/secrets/default/plain/k`, 'raw-plaintext-xyz');
  const line = userError(['secret', 'get', 'default/plain/k', '--identity', id('a')]);
  assert.match(line, /global\/secrets\/default\/plain\/k: envelope cannot be opened \(not-an-envelope\)/);
  assert.ok(!line.includes('raw-plaintext-xyz'));
  assert.match(ok(['secret', 'ls', 'default/plain']).stdout, /NOT OPENABLE \(not-an-envelope\)/);
});
