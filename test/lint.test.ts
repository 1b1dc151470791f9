/**
 * `confsync lint` runs the daemon's own checks (desired/validate.ts): what the
 * daemon skips and reports, lint reports by the same path and reason, and exits 1.
 * The real CLI and the real daemon against one real etcd.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { runCli, type CliRun } from './harness/cli.js';
import { DaemonProcess, until } from './harness/daemon.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';

const P = '/confsync';
let etcd: EtcdHandle;
let dir: string;
let idFile: string;

const cli = (args: string[]): CliRun => runCli(args, { cwd: dir, endpoint: etcd.endpoint });
const put = (logical: string, value: string) => etcd.ctl('put', `${P}/${logical}`, value);
/** `path: reason` lines of lint's stdout. */
const lines = (r: CliRun) => r.stdout.split('\n').filter(Boolean);

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-lint-'));
  idFile = path.join(dir, 'eu.key');
  const eu = generateIdentity();
  const other = generateIdentity();
  await writeIdentityFile(idFile, eu);
  const sealTo = async (at: string, id: typeof eu) => seal(Buffer.from('pw-5f2a'), at, [recipientOf(id.publicKey)]);

  // Good keys: nothing to report.
  put('global/configmaps/default/good/k', 'v');
  put('global/configmaps/default/good/@meta', '{"labels":{"team":"a"}}');
  put('global/secrets/default/good/pw', await sealTo('global/secrets/default/good/pw', eu));
  // The issue's corpus, in the daemon's scope (global/).
  put('global/configmaps/default/bogus/k', 'v');
  put('global/configmaps/default/bogus/@meta', '{"labels":{},"bogus":1}');
  put('global/configmaps/default/notjson/k', 'v');
  put('global/configmaps/default/notjson/@meta', '{not json');
  put('global/secrets/default/plain/pw', 'hunter2-plaintext');
  // Well-formed, but sealed to someone else: only opening finds it.
  put('global/secrets/default/notme/pw', await sealTo('global/secrets/default/notme/pw', other));
  // Outside the eu daemon's scope: only lint sees these.
  put('clusters/us/configmaps/web/app/@meta', '{"placement":{"clusters":"us"}}');
  put('clusters/us/configmaps/Bad/app/k', 'v');
});

after(async () => {
  await etcd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const STRUCTURAL = [
  'clusters/us/configmaps/Bad/app/k: namespace "Bad" is not a DNS-1123 label',
  'clusters/us/configmaps/web/app/@meta: @meta field placement.clusters: Invalid input: expected array, received string',
  'global/configmaps/default/bogus/@meta: @meta unknown field bogus',
  'global/configmaps/default/notjson/@meta: @meta is not valid JSON',
  'global/secrets/default/plain/pw: envelope cannot be opened (not-an-envelope)',
];

test('lint: @meta with an unknown field, @meta not JSON, plaintext under secrets/: one line each by path, exit 1', () => {
  const r = cli(['lint']);
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(lines(r), STRUCTURAL);
  assert.match(r.stderr, /^\d+ key\(s\) checked under \/confsync\/ at revision \d+, .*: 5 problem\(s\)\n$/);
  assert.ok(!r.stdout.includes('hunter2') && !r.stderr.includes('hunter2'), 'never a value');
});

test('lint --identity also opens every envelope', () => {
  const r = cli(['lint', '--identity', idFile]);
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(lines(r), [...STRUCTURAL, 'global/secrets/default/notme/pw: envelope cannot be opened (not-a-recipient)'].sort());
  assert.match(r.stderr, /1 of 2 well-formed secret\(s\) opened: 6 problem\(s\)/);
  assert.ok(!r.stdout.includes('pw-5f2a') && !r.stderr.includes('pw-5f2a'), 'never a plaintext');
});

test('lint and the daemon report the same problems in the daemon\'s scope, by the same path and reason', async () => {
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile });
  try {
    d.start();
    await d.ready();
    const linted = lines(cli(['lint', '--identity', idFile])).filter((l) => l.startsWith('global/') || l.startsWith('clusters/eu/'));
    assert.equal(linted.length, 4);
    const inLog = (l: string) => {
      const [at, reason] = [l.slice(0, l.indexOf(': ')), l.slice(l.indexOf(': ') + 2)];
      return d.log.includes(`"path":${JSON.stringify(at)},"reason":${JSON.stringify(reason)}`);
    };
    await until(() => linted.every(inLog), 'every lint problem in the daemon log');
    // And the daemon reports nothing lint does not.
    const reported = [...d.log.matchAll(/"path":"([^"]+)","reason":"((?:[^"\\]|\\.)*)"/g)].map((m) => `${m[1]}: ${JSON.parse(`"${m[2]}"`)}`);
    assert.deepEqual([...new Set(reported)].sort(), linted);
  } finally {
    await d.cleanup();
  }
});

test('lint on a clean prefix: exit 0, no lines', () => {
  const r = runCli(['lint', '--prefix', '/clean'], { cwd: dir, endpoint: etcd.endpoint });
  etcd.ctl('put', '/clean/global/configmaps/default/ok/k', 'v');
  const again = runCli(['lint', '--prefix', '/clean'], { cwd: dir, endpoint: etcd.endpoint });
  for (const x of [r, again]) {
    assert.equal(x.code, 0, x.stderr);
    assert.equal(x.stdout, '');
    assert.match(x.stderr, /: 0 problem\(s\)/);
  }
});

test('lint --config checks the object limits of that config, as its daemons do', () => {
  const prefix = '/limits';
  for (const k of ['a', 'b', 'c']) etcd.ctl('put', `${prefix}/global/configmaps/default/wide/${k}`, 'v');
  const config = path.join(dir, 'limits.yaml');
  fs.writeFileSync(config, `cluster: eu\netcd: { endpoints: ["${etcd.endpoint}"], prefix: ${prefix} }\nlimits: { maxObjectKeys: 2 }\n`);
  const withDefaults = runCli(['lint', '--prefix', prefix], { cwd: dir, endpoint: etcd.endpoint });
  assert.equal(withDefaults.code, 0, withDefaults.stderr);
  const r = runCli(['lint', '--config', config], { cwd: dir, endpoint: etcd.endpoint, env: { CONFSYNC_ENDPOINTS: undefined } });
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(lines(r), ['configmaps/default/wide: object has 3 keys, over limits.maxObjectKeys (2); last good state kept']);
});
