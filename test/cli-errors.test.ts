/**
 * Errors an operator can act on, through the real CLI: an unreachable etcd is one
 * line naming the endpoint and where it came from (exit 1); bare host:port works as
 * in etcdctl; usage mistakes are one line and exit 2; no Node internals, no stack,
 * no gRPC "Resolution note", no DeprecationWarning.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli, type CliRun } from './harness/cli.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { freePort } from './harness/ports.js';

const P = '/confsync';
let etcd: EtcdHandle;
let dir: string;
let dead: string;

const cli = (args: string[], env: Record<string, string | undefined> = {}): CliRun => runCli(args, { cwd: dir, endpoint: etcd.endpoint, env });
const bare = () => etcd.endpoint.replace(/^http:\/\//, '');

/** One line on stderr, none of Node's or gRPC's internals; returns it. */
function oneLine(r: CliRun, code: number, what: string): string {
  assert.equal(r.code, code, `${what}: exit ${r.code}, stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `${what}: one line on stderr, got: ${r.stderr}`);
  for (const internal of [/\n\s+at /, /Resolution note/, /UNAVAILABLE/, /DeprecationWarning/, /DEP0\d+/, /Received type/, /NaN/, /ERR_/]) {
    assert.doesNotMatch(r.stderr, internal, `${what}: ${r.stderr}`);
  }
  return lines[0]!;
}

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-clierr-'));
  dead = `127.0.0.1:${await freePort()}`; // nothing listens there
  etcd.ctl('put', `${P}/global/configmaps/default/app/k`, 'hello');
});

after(async () => {
  await etcd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('etcd unreachable: the endpoint, where it came from, what to try; exit 1', () => {
  const config = path.join(dir, 'ops.yaml');
  fs.writeFileSync(config, `etcd:\n  endpoints: [http://${dead}]\n`);
  const origins: [string, string[], Record<string, string | undefined>, string][] = [
    ['--endpoints', ['--endpoints', `http://${dead}`], {}, '--endpoints'],
    ['$CONFSYNC_ENDPOINTS', [], { CONFSYNC_ENDPOINTS: `http://${dead}` }, '$CONFSYNC_ENDPOINTS'],
    ['--config', ['--config', config], { CONFSYNC_ENDPOINTS: undefined }, `etcd.endpoints in ${config}`],
  ];
  for (const verb of [['lint'], ['status'], ['config', 'get', 'default/app/k'], ['history', 'default/app']]) {
    for (const [name, args, env, origin] of origins) {
      const line = oneLine(cli([...verb, ...args], env), 1, `${verb.join(' ')} via ${name}`);
      assert.ok(line.startsWith(`confsync: cannot reach etcd at http://${dead} (from ${origin}): connection refused.`), line);
      assert.match(line, /--endpoints, \$CONFSYNC_ENDPOINTS or etcd\.endpoints in --config/);
    }
  }
});

test('no endpoint given anywhere: the default is named as such', () => {
  const r = runCli(['lint'], { cwd: dir, endpoint: '', env: { CONFSYNC_ENDPOINTS: undefined } });
  // 127.0.0.1:2379 may or may not run an etcd on this machine; only the refusal is checked.
  if (r.code !== 0) assert.match(oneLine(r, 1, 'default endpoint'), /etcd at http:\/\/127\.0\.0\.1:2379 \(from the default; none of --endpoints, \$CONFSYNC_ENDPOINTS, --config given\)/);
});

test('bare host:port, as etcdctl takes it: --endpoints, $CONFSYNC_ENDPOINTS and the config file', () => {
  const config = path.join(dir, 'bare.yaml');
  fs.writeFileSync(config, `etcd:\n  endpoints: [${bare()}]\n`);
  for (const [what, args, env] of [
    ['--endpoints', ['--endpoints', bare()], {}],
    ['$CONFSYNC_ENDPOINTS', [], { CONFSYNC_ENDPOINTS: bare() }],
    ['--config', ['--config', config], { CONFSYNC_ENDPOINTS: undefined }],
  ] as [string, string[], Record<string, string | undefined>][]) {
    const r = cli(['config', 'get', 'default/app/k', ...args], env);
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    assert.equal(r.stdout, 'hello', what);
  }
});

test('a bad endpoint is refused under the name it was given by (exit 2)', () => {
  assert.match(oneLine(cli(['lint', '--endpoints', 'ftp://x:1']), 2, '--endpoints'), /^confsync: --endpoints "ftp:\/\/x:1": must be host:port or an http\(s\):\/\/host:port URL/);
  assert.match(oneLine(cli(['lint'], { CONFSYNC_ENDPOINTS: 'not an endpoint' }), 2, 'env'), /^confsync: \$CONFSYNC_ENDPOINTS "not an endpoint": must be/);
  assert.match(oneLine(cli(['lint', '--prefix', 'no-slash']), 2, '--prefix'), /^confsync: --prefix "no-slash": must start with "\/"/);
  assert.match(oneLine(cli(['lint'], { CONFSYNC_PREFIX: 'no-slash' }), 2, 'env prefix'), /^confsync: \$CONFSYNC_PREFIX "no-slash"/);
});

test('usage errors: one line, exit 2; bad numbers never reach Node', () => {
  const cases: [string[], RegExp][] = [
    [['lint', '--nope'], /unknown option '--nope'/],
    [['bogus'], /unknown command 'bogus'/],
    [['history', 'default/app', '-o', 'xml'], /argument 'xml' is invalid/],
    [['rollback', 'default/app'], /required option '--to-revision <rev>' not specified/],
    [['dev', '--port', 'abc'], /option '--port <port>' argument 'abc' is invalid\. Expected a TCP port from 1 to 65535\./],
    [['dev', '--port', '99999'], /argument '99999' is invalid/],
    [['dev', '--port', '0'], /argument '0' is invalid/],
    [['rewrap', '--concurrency', 'lots'], /option '--concurrency <n>' argument 'lots' is invalid/],
  ];
  for (const [args, want] of cases) {
    const line = oneLine(cli(args), 2, args.join(' '));
    assert.match(line, /^confsync: /, args.join(' '));
    assert.match(line, want, args.join(' '));
  }
  assert.ok(!fs.existsSync(path.join(dir, '.confsync')), 'dev with a bad --port created nothing');
});

test('https to an IP: no DeprecationWarning (DEP0123, which grpc-js triggers) leaks; the TLS failure is named', () => {
  const line = oneLine(cli(['lint', '--endpoints', etcd.endpoint.replace('http:', 'https:')]), 1, 'https to a plain etcd');
  // grpc-js reports either the TLS disconnect or the reset, by timing; the hint is the same.
  assert.match(line, /cannot reach etcd at https:\/\/127\.0\.0\.1:\d+ \(from --endpoints\): (TLS handshake failed|connection reset)\./);
  assert.match(line, /https:\/\/ needs etcd\.tls\.ca from --config; a plain etcd needs http:\/\//);
});
