/**
 * Text from etcd never reaches the terminal raw. Anyone who can write a status key
 * or a key name could otherwise set the terminal title (`ESC ] 0 ; … BEL`), recolour
 * or move the cursor, or reorder a line with bidi overrides. The built CLI runs as a
 * child process against a real etcd; its stdout and stderr must hold no C0 control
 * (except tab and newline), DEL, C1 control or bidi override/isolate.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { runCli, type CliRun } from './harness/cli.js';
import { MAIN } from './harness/daemon.js';

const P = '/confsync';
const ESC = '\x1b';
const TITLE = `${ESC}]0;pwned\x07`;
const NASTY = `${TITLE}${ESC}[31m\u009b2J\u202egnp.exe\u2066`;
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;
let etcd: EtcdHandle;
let dir: string;

function cli(args: string[], input = ''): CliRun {
  return runCli(args, { cwd: dir, endpoint: etcd.endpoint, input });
}

function clean(args: string[], what: string): { stdout: string; stderr: string } {
  const r = cli(args);
  for (const [name, text] of [['stdout', r.stdout], ['stderr', r.stderr]] as const) {
    const m = UNSAFE.exec(text);
    assert.equal(m, null, `${what}: raw U+${m?.[0].charCodeAt(0).toString(16).padStart(4, '0')} on ${name}: ${JSON.stringify(text)}`);
  }
  return r;
}

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-output-'));
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('status: a status value and a status key carrying escape sequences are shown escaped', () => {
  const status = {
    cluster: `c1${TITLE}`,
    node: `n1\u202e`,
    revision: 1,
    updatedAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    objects: 1,
    errors: 1,
    lastError: { path: `global/configmaps/default/app/k${ESC}[2J`, reason: NASTY },
    state: 'watching',
    ready: true,
    version: '0',
  };
  etcd.ctl('put', `${P}/status/c1/n1`, JSON.stringify(status));
  etcd.ctl('put', `${P}/status/c1/n2${TITLE}`, 'not json');
  etcd.ctl('put', `${P}/status/c1/n3`, JSON.stringify({ ...status, cluster: 7 }));
  const table = clean(['status'], 'status');
  assert.match(table.stdout, /c1\\x1b\]0;pwned\\x07/, 'shown, escaped');
  assert.match(table.stdout, /\\x9b2J\\u\{202e\}gnp\.exe/);
  assert.match(table.stderr, /n2\\x1b\]0;pwned\\x07: not a status JSON/);
  assert.match(table.stderr, /status\/c1\/n3: not a status JSON/, 'a status with fields of the wrong type is skipped, not a crash');
  const json = clean(['status', '--json'], 'status --json');
  const parsed = JSON.parse(json.stdout) as { nodes: { lastError: { reason: string } }[] };
  assert.equal(parsed.nodes[0]!.lastError.reason, NASTY, '--json escapes as JSON and round-trips');
  const yaml = clean(['status', '-o', 'yaml'], 'status -o yaml');
  assert.equal((parseYaml(yaml.stdout) as typeof parsed).nodes[0]!.lastError.reason, NASTY, '-o yaml escapes in double quotes and round-trips');
  clean(['status', '--wait', '--revision', '999999', '--timeout', '0.3'], 'status --wait');
});

test('config ls, secret ls, lint, recipients pull: key names with escape sequences are escaped', () => {
  etcd.ctl('put', `${P}/global/configmaps/default/app/k${TITLE}`, 'v');
  etcd.ctl('put', `${P}/global/secrets/default/app/k${TITLE}`, 'v');
  etcd.ctl('put', `${P}/recipients/c${TITLE}`, 'x');
  etcd.ctl('put', `${P}/recipients/c2`, `confsync1${TITLE}`);
  assert.match(clean(['config', 'ls'], 'config ls').stdout, /k\\x1b\]0;pwned\\x07/);
  assert.match(clean(['secret', 'ls'], 'secret ls').stdout, /k\\x1b\]0;pwned\\x07/);
  clean(['lint'], 'lint');
  clean(['recipients', 'pull'], 'recipients pull');
  clean(['config', 'ls', `default${TITLE}`], 'config ls <nasty ref>');
  for (const o of ['json', 'yaml']) {
    const ls = clean(['config', 'ls', '-o', o], `config ls -o ${o}`).stdout;
    const entries = (o === 'json' ? JSON.parse(ls) : parseYaml(ls)).entries as { ref: string }[];
    assert.ok(entries.some((e) => e.ref === `default/app/k${TITLE}`), `config ls -o ${o} round-trips the key name`);
    clean(['secret', 'ls', '-o', o], `secret ls -o ${o}`);
    clean(['lint', '-o', o], `lint -o ${o}`);
  }
  clean(['config', 'get', `default/app/k${TITLE}`], 'error naming a key');
});

test('config get: raw value bytes when stdout is not a terminal (for pipes), escaped on a terminal', () => {
  etcd.ctl('put', `${P}/global/configmaps/default/app/banner`, `hello${TITLE}`);
  assert.equal(cli(['config', 'get', 'default/app/banner']).stdout, `hello${TITLE}`, 'piped: the exact bytes');
  // `script` gives the CLI a pseudo-terminal as stdout.
  const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(MAIN)} config get default/app/banner --endpoints ${etcd.endpoint}`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', input: '' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.includes('hello\\x1b]0;pwned\\x07'), JSON.stringify(r.stdout));
  assert.ok(!r.stdout.includes(ESC) && !r.stdout.includes('\x07'), JSON.stringify(r.stdout));
});
