/**
 * Identity file permissions, through the built CLI and the daemon (child processes,
 * some run as an unprivileged uid/gid — the tests run as root): a private key file
 * with any group/other bit, or owned by another user, is refused with one line that
 * names the file, what was found and the fix; keygen creates 0600 whatever the umask
 * and never overwrites silently.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { MAIN } from './harness/daemon.js';

const USER = { uid: 10001, gid: 10001 };
let etcd: EtcdHandle;
let dir: string;

function cli(args: string[], opts: SpawnSyncOptions = {}): { code: number | null; stdout: string; stderr: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd: dir, input: '', encoding: 'utf8', env: { ...env, CONFSYNC_ENDPOINTS: etcd.endpoint }, ...opts });
  return { code: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** One line on stderr, exit 2, no stack. */
function refused(r: { code: number | null; stderr: string }, what: string): string {
  assert.equal(r.code, 2, `${what}: expected exit 2; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `${what}: one line, got ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0]!;
}

function keygen(file: string, opts: SpawnSyncOptions = {}): string {
  const r = cli(['keygen', '--out', file], opts);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-idmodes-'));
  fs.chmodSync(dir, 0o777); // the unprivileged uid writes here too
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('keygen --out: 0600 even under umask 000, and an existing file is never overwritten without --force', () => {
  const file = path.join(dir, 'umask.key');
  const r = spawnSync('sh', ['-c', `umask 000; exec "${process.execPath}" "${MAIN}" keygen --out "${file}"`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.statSync(file).mode & 0o7777, 0o600);
  const before = fs.readFileSync(file, 'utf8');
  assert.match(refused(cli(['keygen', '--out', file]), 'keygen over a file'), new RegExp(`identity file ${file} already exists`));
  assert.equal(fs.readFileSync(file, 'utf8'), before);
  keygen(file + '.new');
  assert.equal(cli(['keygen', '--out', file, '--force']).code, 0);
  assert.notEqual(fs.readFileSync(file, 'utf8'), before, '--force replaces');
  assert.equal(fs.statSync(file).mode & 0o7777, 0o600);
});

test('any group/other bit is refused, also for the loading user\'s own group (the old fsGroup exception)', () => {
  const file = path.join(dir, 'grp.key');
  keygen(file, USER);
  assert.equal(fs.statSync(file).uid, USER.uid);
  for (const mode of [0o640, 0o440, 0o660, 0o604, 0o644, 0o610]) {
    fs.chmodSync(file, mode);
    const octal = mode.toString(8).padStart(4, '0');
    const line = refused(cli(['secret', 'get', 'default/x/k', '--identity', file], USER), `mode ${octal}`);
    assert.equal(line, `confsync: identity file ${file} has mode ${octal}: group/other permission bits are not allowed on a private key; run: chmod 600 ${file}`);
  }
  for (const mode of [0o600, 0o400]) {
    fs.chmodSync(file, mode);
    // Loads, then fails later for want of the secret: the identity itself was accepted.
    assert.match(refused(cli(['secret', 'get', 'default/x/k', '--identity', file], USER), 'ok mode'), /global\/secrets\/default\/x\/k: not found/);
  }
});

test('a key file owned by another user is refused (root must not trust a file another user can replace)', () => {
  const file = path.join(dir, 'theirs.key');
  keygen(file, USER);
  const line = refused(cli(['secret', 'get', 'default/x/k', '--identity', file]), 'root loading uid 10001\'s file');
  assert.match(line, new RegExp(`^confsync: identity file ${file} is owned by uid 10001, not by this process \\(uid 0\\).*chown 0 ${file}$`));
  // keygen --add loads the file first: same rule, and the file is left alone.
  const before = fs.readFileSync(file, 'utf8');
  assert.match(refused(cli(['keygen', '--out', file, '--add']), 'keygen --add'), /owned by uid 10001/);
  assert.equal(fs.readFileSync(file, 'utf8'), before);
  fs.chownSync(file, 0, 0);
  assert.match(refused(cli(['secret', 'get', 'default/x/k', '--identity', file]), 'after chown'), /not found/);
});

test('the daemon refuses to start with a group-readable identity (one line, exit 2), running as its own user', () => {
  const file = path.join(dir, 'daemon.key');
  keygen(file, USER);
  fs.chmodSync(file, 0o640);
  const config = path.join(dir, 'daemon.yaml');
  fs.writeFileSync(config, `cluster: eu\nnode: n1\nidentity: ${file}\netcd: { endpoints: ["${etcd.endpoint}"] }\n`);
  fs.chmodSync(config, 0o644);
  const r = cli(['run', '--config', config], { ...USER, timeout: 20_000, killSignal: 'SIGKILL' });
  const line = refused(r, 'daemon');
  assert.match(line, new RegExp(`identity file ${file} has mode 0640: .*chmod 600 ${file}$`));
});
