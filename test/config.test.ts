import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { formatIssues } from '../src/config/issues.js';
import { loadConfigFile, parseConfig, type ConfigOverrides } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { UserError } from '../src/errors.js';

/**
 * SPEC §6 and STYLE habit 7: config declared once, defaults <- file <- overrides,
 * unknown fields and bad values refused with the field's path, on one line.
 */

const SRC = 'c.yaml';
const NO_ENV: NodeJS.ProcessEnv = {};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-config-test-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let fileSeq = 0;
function writeConfig(text: string): string {
  const file = path.join(tmp, `config-${++fileSeq}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

/** Run `fn`, which must throw a one-line UserError; return its message. */
function userError(fn: () => unknown): string {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof UserError, `expected a UserError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.ok(!caught.message.includes('\n'), `message is not one line: ${JSON.stringify(caught.message)}`);
  return caught.message;
}

// ---------------------------------------------------------------- defaults

test('defaults: a minimal {cluster} gets every default', () => {
  const cfg = parseConfig({ cluster: 'a' }, SRC, {}, NO_ENV);
  const want: Config = {
    cluster: 'a',
    node: os.hostname(),
    labels: {},
    etcd: { endpoints: ['http://127.0.0.1:2379'], prefix: '/confsync' },
    sinks: {},
    hooks: [],
    templates: [],
    metrics: { stallSeconds: 30 },
    status: { leaseTtlSeconds: 10, intervalSeconds: 2 },
    guard: { enabled: true, maxDeletePercent: 50, minObjects: 10 },
    limits: { maxObjectKeys: 1000, maxObjectBytes: 8388608, retryMaxSeconds: 300 },
    stateDir: '/var/lib/confsync-state',
    snapshotIntervalSeconds: 1,
    resyncSeconds: 60,
    verifySeconds: 600,
    log: { level: 'info', format: 'auto' },
  };
  assert.deepEqual(cfg, want);
});

test('defaults: the file sink is off unless given; when given, modes default to 0o644 / 0o400', () => {
  assert.equal(parseConfig({ cluster: 'a' }, SRC, {}, NO_ENV).sinks.files, undefined);
  const cfg = parseConfig({ cluster: 'a', sinks: { files: { root: '/var/lib/confsync' } } }, SRC, {}, NO_ENV);
  assert.deepEqual(cfg.sinks.files, { root: '/var/lib/confsync', configFileMode: 0o644, secretFileMode: 0o400 });
});

test('defaults: an empty YAML file is an empty config (cluster is then required)', () => {
  const file = writeConfig('# nothing here\n');
  const msg = userError(() => loadConfigFile(file, {}, NO_ENV));
  assert.ok(msg.startsWith(`${file}: `), msg);
  assert.match(msg, /field cluster\b/);
});

// ---------------------------------------------------------------- accepted values

const acceptedCases: { name: string; raw: Record<string, unknown>; pick: (c: Config) => unknown; want: unknown }[] = [
  { name: 'bare host:port, as etcdctl takes it', raw: { etcd: { endpoints: ['etcd-0:2379', '10.0.0.5:2379', '[::1]:2379'] } }, pick: (c) => c.etcd.endpoints, want: ['http://etcd-0:2379', 'http://10.0.0.5:2379', 'http://[::1]:2379'] },
  { name: 'bare host:port with etcd.tls is https', raw: { etcd: { endpoints: ['etcd-0:2379'], tls: { ca: '/ca.pem' } } }, pick: (c) => c.etcd.endpoints, want: ['https://etcd-0:2379'] },
  { name: 'https endpoints', raw: { etcd: { endpoints: ['https://etcd-0:2379', 'https://etcd-1:2379'] } }, pick: (c) => c.etcd.endpoints, want: ['https://etcd-0:2379', 'https://etcd-1:2379'] },
  { name: 'nested prefix', raw: { etcd: { prefix: '/org/confsync' } }, pick: (c) => c.etcd.prefix, want: '/org/confsync' },
  { name: 'tls and auth', raw: { etcd: { tls: { ca: '/ca' }, auth: { username: 'u', passwordFile: '/p' } } }, pick: (c) => [c.etcd.tls, c.etcd.auth], want: [{ ca: '/ca' }, { username: 'u', passwordFile: '/p' }] },
  { name: 'labels', raw: { labels: { region: 'eu', tier: '1' } }, pick: (c) => c.labels, want: { region: 'eu', tier: '1' } },
  { name: 'quoted octal mode "0640"', raw: { sinks: { files: { root: '/r', configFileMode: '0640' } } }, pick: (c) => c.sinks.files?.configFileMode, want: 0o640 },
  { name: 'quoted octal mode "600"', raw: { sinks: { files: { root: '/r', secretFileMode: '600' } } }, pick: (c) => c.sinks.files?.secretFileMode, want: 0o600 },
  { name: 'resyncSeconds fractional', raw: { resyncSeconds: 0.5 }, pick: (c) => c.resyncSeconds, want: 0.5 },
  { name: 'log level debug', raw: { log: { level: 'debug' } }, pick: (c) => c.log.level, want: 'debug' },
  { name: 'identity', raw: { identity: '/etc/confsync/identity.key' }, pick: (c) => c.identity, want: '/etc/confsync/identity.key' },
];
for (const c of acceptedCases) {
  test(`accepted: ${c.name}`, () => {
    assert.deepEqual(c.pick(parseConfig({ cluster: 'a', ...c.raw }, SRC, {}, NO_ENV)), c.want);
  });
}

// ---------------------------------------------------------------- unknown fields

const unknownCases: { name: string; raw: unknown; want: string[] }[] = [
  { name: 'top level', raw: { cluster: 'a', clsuter: 'b' }, want: ['unknown field clsuter'] },
  { name: 'etcd.endpoint (singular)', raw: { cluster: 'a', etcd: { endpoint: 'http://x:2379' } }, want: ['unknown field etcd.endpoint'] },
  { name: 'etcd.tls.cafile', raw: { cluster: 'a', etcd: { tls: { cafile: '/ca' } } }, want: ['unknown field etcd.tls.cafile'] },
  { name: 'etcd.auth.password', raw: { cluster: 'a', etcd: { auth: { username: 'u', passwordFile: '/p', password: 'x' } } }, want: ['unknown field etcd.auth.password'] },
  { name: 'sinks.file (typo)', raw: { cluster: 'a', sinks: { file: { root: '/r' } } }, want: ['unknown field sinks.file'] },
  { name: 'sinks.files.mode', raw: { cluster: 'a', sinks: { files: { root: '/r', mode: '0644' } } }, want: ['unknown field sinks.files.mode'] },
  { name: 'log.lvl', raw: { cluster: 'a', log: { lvl: 'debug' } }, want: ['unknown field log.lvl'] },
  { name: 'several at once, all named', raw: { cluster: 'a', foo: 1, etcd: { endpoint: 'x' } }, want: ['unknown field foo', 'unknown field etcd.endpoint'] },
];
for (const c of unknownCases) {
  test(`unknown field refused: ${c.name}`, () => {
    const msg = userError(() => parseConfig(c.raw, SRC, {}, NO_ENV));
    assert.ok(msg.startsWith(`${SRC}: `), msg);
    for (const w of c.want) assert.ok(msg.includes(w), `${JSON.stringify(msg)} lacks ${JSON.stringify(w)}`);
  });
}

// ---------------------------------------------------------------- bad values

const badCases: { name: string; raw: unknown; want: string }[] = [
  { name: 'cluster missing', raw: {}, want: 'field cluster:' },
  { name: 'cluster uppercase', raw: { cluster: 'Prod' }, want: 'field cluster: must be a DNS-1123 label' },
  { name: 'cluster with underscore', raw: { cluster: 'prod_eu' }, want: 'field cluster:' },
  { name: 'cluster a number', raw: { cluster: 7 }, want: 'field cluster:' },
  { name: 'node empty', raw: { cluster: 'a', node: '' }, want: 'field node:' },
  { name: 'label value a number', raw: { cluster: 'a', labels: { tier: 1 } }, want: 'field labels.tier:' },
  { name: 'endpoint not a URL', raw: { cluster: 'a', etcd: { endpoints: ['not a url'] } }, want: 'field etcd.endpoints[0]:' },
  { name: 'endpoint wrong protocol', raw: { cluster: 'a', etcd: { endpoints: ['ftp://etcd:2379'] } }, want: 'field etcd.endpoints[0]:' },
  { name: 'second endpoint bad', raw: { cluster: 'a', etcd: { endpoints: ['http://ok:2379', 'nope'] } }, want: 'field etcd.endpoints[1]:' },
  { name: 'endpoints empty', raw: { cluster: 'a', etcd: { endpoints: [] } }, want: 'field etcd.endpoints:' },
  { name: 'endpoints a string, not a list', raw: { cluster: 'a', etcd: { endpoints: 'http://x:2379' } }, want: 'field etcd.endpoints:' },
  { name: 'prefix without leading /', raw: { cluster: 'a', etcd: { prefix: 'confsync' } }, want: 'field etcd.prefix:' },
  { name: 'prefix with trailing /', raw: { cluster: 'a', etcd: { prefix: '/confsync/' } }, want: 'field etcd.prefix:' },
  { name: 'prefix "/"', raw: { cluster: 'a', etcd: { prefix: '/' } }, want: 'field etcd.prefix:' },
  { name: 'auth without passwordFile', raw: { cluster: 'a', etcd: { auth: { username: 'u' } } }, want: 'field etcd.auth.passwordFile:' },
  { name: 'identity empty', raw: { cluster: 'a', identity: '' }, want: 'field identity:' },
  { name: 'files without root', raw: { cluster: 'a', sinks: { files: {} } }, want: 'field sinks.files.root:' },
  { name: 'mode above 0o7777', raw: { cluster: 'a', sinks: { files: { root: '/r', configFileMode: 0o10000 } } }, want: 'field sinks.files.configFileMode' },
  { name: 'bare 0644 read as decimal 644', raw: { cluster: 'a', sinks: { files: { root: '/r', configFileMode: 644 } } }, want: 'field sinks.files.configFileMode' },
  { name: 'mode string not octal', raw: { cluster: 'a', sinks: { files: { root: '/r', secretFileMode: '0999' } } }, want: 'field sinks.files.secretFileMode' },
  { name: 'negative uid', raw: { cluster: 'a', sinks: { files: { root: '/r', uid: -1 } } }, want: 'field sinks.files.uid:' },
  { name: 'resyncSeconds zero', raw: { cluster: 'a', resyncSeconds: 0 }, want: 'field resyncSeconds:' },
  { name: 'resyncSeconds a string', raw: { cluster: 'a', resyncSeconds: '60' }, want: 'field resyncSeconds:' },
  { name: 'log level unknown', raw: { cluster: 'a', log: { level: 'verbose' } }, want: 'field log.level:' },
  { name: 'not a mapping (string)', raw: 'cluster: a', want: 'field (top level):' },
  { name: 'not a mapping (list)', raw: [{ cluster: 'a' }], want: 'field (top level):' },
];
for (const c of badCases) {
  test(`bad value refused: ${c.name}`, () => {
    const msg = userError(() => parseConfig(c.raw, SRC, {}, NO_ENV));
    assert.ok(msg.startsWith(`${SRC}: `), msg);
    assert.ok(msg.includes(c.want), `${JSON.stringify(msg)} lacks ${JSON.stringify(c.want)}`);
  });
}

test('formatIssues: every issue on one line, each led by its dotted/indexed path', () => {
  const schema = z.strictObject({ a: z.array(z.strictObject({ b: z.number() })) });
  const r = schema.safeParse({ a: [{ b: 1 }, { b: 'x', c: 1 }], d: 1 });
  assert.equal(r.success, false);
  const msg = formatIssues(r.error!);
  assert.ok(!msg.includes('\n'));
  for (const part of ['field a[1].b:', 'unknown field a[1].c', 'unknown field d']) assert.ok(msg.includes(part), `${msg} lacks ${part}`);
  assert.equal(msg.split('; ').length, 3, msg);
});

// ---------------------------------------------------------------- ${VAR} expansion

const envCases: { name: string; raw: Record<string, unknown>; env: NodeJS.ProcessEnv; pick: (c: Config) => unknown; want: unknown }[] = [
  { name: '${VAR} set', raw: { node: '${NODE_NAME}' }, env: { NODE_NAME: 'n1' }, pick: (c) => c.node, want: 'n1' },
  { name: '${VAR:-default}, VAR unset', raw: { node: '${NODE_NAME:-fallback}' }, env: {}, pick: (c) => c.node, want: 'fallback' },
  { name: '${VAR:-default}, VAR set', raw: { node: '${NODE_NAME:-fallback}' }, env: { NODE_NAME: 'n1' }, pick: (c) => c.node, want: 'n1' },
  { name: '${VAR:-default}, VAR empty', raw: { node: '${NODE_NAME:-fallback}' }, env: { NODE_NAME: '' }, pick: (c) => c.node, want: 'fallback' },
  { name: 'several in one string', raw: { node: 'pre-${A}-${B:-b}' }, env: { A: 'x' }, pick: (c) => c.node, want: 'pre-x-b' },
  { name: 'inside a list', raw: { etcd: { endpoints: ['http://${HOST}:2379'] } }, env: { HOST: 'etcd-0' }, pick: (c) => c.etcd.endpoints, want: ['http://etcd-0:2379'] },
  { name: 'inside a map', raw: { labels: { region: '${REGION}' } }, env: { REGION: 'eu' }, pick: (c) => c.labels, want: { region: 'eu' } },
  { name: 'empty default', raw: { labels: { x: '${U:-}' } }, env: {}, pick: (c) => c.labels.x, want: '' },
  { name: 'default holding ":" and "/"', raw: { etcd: { endpoints: ['${EP:-http://etcd:2379}'] } }, env: {}, pick: (c) => c.etcd.endpoints, want: ['http://etcd:2379'] },
  { name: '$VAR without braces is literal', raw: { node: '$NODE_NAME' }, env: { NODE_NAME: 'n1' }, pick: (c) => c.node, want: '$NODE_NAME' },
  { name: 'the required cluster from env', raw: { cluster: '${CLUSTER}' }, env: { CLUSTER: 'prod-eu' }, pick: (c) => c.cluster, want: 'prod-eu' },
];
for (const c of envCases) {
  test(`env expansion: ${c.name}`, () => {
    assert.deepEqual(c.pick(parseConfig({ cluster: 'a', ...c.raw }, SRC, {}, c.env)), c.want);
  });
}

test('env expansion: the default env is process.env', () => {
  const name = `CONFSYNC_TEST_${process.pid}`;
  process.env[name] = 'from-process-env';
  try {
    assert.equal(parseConfig({ cluster: 'a', node: `\${${name}}` }, SRC).node, 'from-process-env');
  } finally {
    delete process.env[name];
  }
});

const envErrorCases: { name: string; raw: Record<string, unknown>; env: NodeJS.ProcessEnv; want: string }[] = [
  { name: 'unset VAR names the field', raw: { node: '${NOPE}' }, env: {}, want: `${SRC}: field node: environment variable NOPE is not set` },
  { name: 'empty VAR without default counts as unset', raw: { node: '${E}' }, env: { E: '' }, want: 'field node: environment variable E is not set' },
  { name: 'unset VAR in a list names the index', raw: { etcd: { endpoints: ['http://ok:2379', 'http://${H}:2379'] } }, env: {}, want: 'field etcd.endpoints[1]: environment variable H is not set' },
  { name: 'unset VAR in a map names the key', raw: { labels: { region: '${R}' } }, env: {}, want: 'field labels.region: environment variable R is not set' },
  { name: 'expanded value is then validated', raw: { cluster: '${C}' }, env: { C: 'Bad_Name' }, want: 'field cluster: must be a DNS-1123 label' },
];
for (const c of envErrorCases) {
  test(`env expansion error: ${c.name}`, () => {
    const msg = userError(() => parseConfig({ cluster: 'a', ...c.raw }, SRC, {}, c.env));
    assert.ok(msg.includes(c.want), `${JSON.stringify(msg)} lacks ${JSON.stringify(c.want)}`);
  });
}

// ---------------------------------------------------------------- precedence: defaults < file < overrides

const precedenceCases: { name: string; file: string; overrides: ConfigOverrides; env?: NodeJS.ProcessEnv; want: Pick<Config['etcd'], 'prefix' | 'endpoints'> }[] = [
  { name: 'file /a, override /b -> /b', file: 'cluster: a\netcd: { prefix: /a }\n', overrides: { prefix: '/b' }, want: { prefix: '/b', endpoints: ['http://127.0.0.1:2379'] } },
  { name: 'file /a, no override -> /a', file: 'cluster: a\netcd: { prefix: /a }\n', overrides: {}, want: { prefix: '/a', endpoints: ['http://127.0.0.1:2379'] } },
  { name: 'neither -> /confsync', file: 'cluster: a\n', overrides: {}, want: { prefix: '/confsync', endpoints: ['http://127.0.0.1:2379'] } },
  { name: 'override only -> /b', file: 'cluster: a\n', overrides: { prefix: '/b' }, want: { prefix: '/b', endpoints: ['http://127.0.0.1:2379'] } },
  {
    name: 'endpoints: override replaces the file list (not merged)',
    file: 'cluster: a\netcd:\n  endpoints: [http://f1:2379, http://f2:2379]\n',
    overrides: { endpoints: ['http://o:2379'] },
    want: { prefix: '/confsync', endpoints: ['http://o:2379'] },
  },
  {
    name: 'prefix override keeps the file\'s endpoints',
    file: 'cluster: a\netcd:\n  endpoints: [http://f:2379]\n  prefix: /a\n',
    overrides: { prefix: '/b' },
    want: { prefix: '/b', endpoints: ['http://f:2379'] },
  },
  { name: 'env-expanded file value < override', file: 'cluster: a\netcd: { prefix: "${P}" }\n', overrides: { prefix: '/b' }, env: { P: '/env' }, want: { prefix: '/b', endpoints: ['http://127.0.0.1:2379'] } },
  { name: 'env-expanded file value > default', file: 'cluster: a\netcd: { prefix: "${P}" }\n', overrides: {}, env: { P: '/env' }, want: { prefix: '/env', endpoints: ['http://127.0.0.1:2379'] } },
];
for (const c of precedenceCases) {
  test(`precedence: ${c.name}`, () => {
    const cfg = loadConfigFile(writeConfig(c.file), c.overrides, c.env ?? NO_ENV);
    assert.deepEqual({ prefix: cfg.etcd.prefix, endpoints: cfg.etcd.endpoints }, c.want);
  });
}

test('precedence: an override does not drop the file\'s other etcd fields', () => {
  const cfg = loadConfigFile(writeConfig('cluster: a\netcd:\n  prefix: /a\n  tls: { ca: /ca.pem }\n'), { prefix: '/b', endpoints: ['https://o:2379'] }, NO_ENV);
  assert.deepEqual(cfg.etcd, { prefix: '/b', endpoints: ['https://o:2379'], tls: { ca: '/ca.pem' } });
});

test('precedence: overrides are validated like file values', () => {
  const msg = userError(() => parseConfig({ cluster: 'a' }, SRC, { prefix: 'no-slash' }, NO_ENV));
  assert.ok(msg.includes('field etcd.prefix:'), msg);
  const msg2 = userError(() => parseConfig({ cluster: 'a' }, SRC, { endpoints: ['etcd 2379'] }, NO_ENV));
  assert.ok(msg2.includes('field etcd.endpoints[0]:'), msg2);
});

// ---------------------------------------------------------------- loadConfigFile

test('loadConfigFile: a full file loads', () => {
  const file = writeConfig(
    [
      'cluster: prod-eu',
      'node: ${NODE_NAME}',
      'labels: { region: eu }',
      'etcd:',
      '  endpoints: [https://etcd:2379]',
      '  prefix: /cs',
      'identity: /etc/confsync/identity.key',
      'sinks:',
      '  files: { root: /var/lib/confsync, secretsRoot: /run/confsync/secrets, configFileMode: "0640", secretFileMode: "0400" }',
      'resyncSeconds: 30',
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  assert.deepEqual(loadConfigFile(file, {}, { NODE_NAME: 'node-7' }), {
    cluster: 'prod-eu',
    node: 'node-7',
    labels: { region: 'eu' },
    etcd: { endpoints: ['https://etcd:2379'], prefix: '/cs' },
    identity: '/etc/confsync/identity.key',
    sinks: { files: { root: '/var/lib/confsync', secretsRoot: '/run/confsync/secrets', configFileMode: 0o640, secretFileMode: 0o400 } },
    hooks: [],
    templates: [],
    metrics: { stallSeconds: 30 },
    status: { leaseTtlSeconds: 10, intervalSeconds: 2 },
    guard: { enabled: true, maxDeletePercent: 50, minObjects: 10 },
    limits: { maxObjectKeys: 1000, maxObjectBytes: 8388608, retryMaxSeconds: 300 },
    stateDir: '/var/lib/confsync-state',
    snapshotIntervalSeconds: 1,
    resyncSeconds: 30,
    verifySeconds: 600,
    log: { level: 'warn', format: 'auto' },
  } satisfies Config);
});

const fileErrorCases: { name: string; file: () => string; want: RegExp }[] = [
  { name: 'missing file', file: () => path.join(tmp, 'does-not-exist.yaml'), want: /cannot read config file \(ENOENT\)/ },
  { name: 'a directory', file: () => tmp, want: /cannot read config file \(EISDIR\)/ },
  { name: 'invalid YAML (nested compact mapping)', file: () => writeConfig('cluster: a\n  bad: [\n'), want: /not valid YAML: / },
  { name: 'invalid YAML (unterminated flow list)', file: () => writeConfig('etcd: { endpoints: [http://x\ncluster: a\n'), want: /not valid YAML: / },
  { name: 'invalid YAML (unterminated quote)', file: () => writeConfig('cluster: "a\n'), want: /not valid YAML: / },
  { name: 'duplicate keys', file: () => writeConfig('cluster: a\ncluster: b\n'), want: /not valid YAML: .*unique/ },
  { name: 'schema error in the file', file: () => writeConfig('cluster: a\netcd:\n  endpoint: http://x:2379\n'), want: /: unknown field etcd\.endpoint$/ },
  { name: 'two schema errors stay on one line', file: () => writeConfig('cluster: A\nlog: { level: loud }\n'), want: /field cluster: .*; field log\.level: / },
];
for (const c of fileErrorCases) {
  test(`loadConfigFile: ${c.name} -> one-line UserError naming the file`, () => {
    const file = c.file();
    const msg = userError(() => loadConfigFile(file, {}, NO_ENV));
    assert.ok(msg.startsWith(`${file}: `), msg);
    assert.match(msg, c.want);
  });
}

// ---------------------------------------------------------------- regressions

test(
  'loadConfigFile: a bare YAML 0400 mode is refused or read as octal, never as decimal 400 (= 0o620)',
  () => {
    const file = writeConfig('cluster: a\nsinks:\n  files: { root: /r, secretFileMode: 0400 }\n');
    let mode: number | undefined;
    let refused: string | undefined;
    try {
      mode = loadConfigFile(file, {}, NO_ENV).sinks.files?.secretFileMode;
    } catch (err) {
      refused = (err as Error).message;
    }
    assert.equal(mode, undefined, `got 0o${mode?.toString(8)}`);
    assert.match(refused ?? '', /field sinks\.files\.secretFileMode/);
  },
);

test(
  'loadConfigFile: a file that is not a mapping gives a UserError even with overrides',
  () => {
    const file = writeConfig('cluster:a\n');
    const msg = userError(() => loadConfigFile(file, { prefix: '/b' }, NO_ENV));
    assert.match(msg, /field \(top level\)/);
  },
);

test('numeric modes are refused, naming the field (quoted octal strings only)', () => {
  const msg = userError(() => parseConfig({ cluster: 'a', sinks: { files: { root: '/r', secretFileMode: 0o440 } } }, SRC, {}, NO_ENV));
  assert.match(msg, /field sinks\.files\.secretFileMode: must be a quoted octal mode/);
});
