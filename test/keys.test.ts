import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterError, dataKeyError, logicalPath, META_KEY, nameError, namespaceError, parseKey, printable, templatePath, type ParsedKey } from '../src/keyspace.js';

/**
 * The key layout is the public API (SPEC §1): one table of keys relative to the
 * prefix, each with what parseKey must make of it. `want` is either the parsed
 * fields the key must have (checked with a partial deep-equal), or `invalid`
 * with a substring the reason must contain.
 */

type Want = { invalid: string } | Partial<Exclude<ParsedKey, { type: 'invalid' }>>;
interface Case {
  name: string;
  key: string;
  want: Want;
}

const ns63 = 'n'.repeat(63);
const ns64 = 'n'.repeat(64);
const key253 = 'k'.repeat(253);
const key254 = 'k'.repeat(254);
const name253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
const name254 = `${name253}e`;

const cases: Case[] = [
  // ---- valid data keys
  {
    name: 'global configmap key',
    key: 'global/configmaps/default/app/config.yaml',
    want: { type: 'data', scope: { type: 'global' }, kind: 'configmaps', namespace: 'default', name: 'app', key: 'config.yaml', logicalPath: 'global/configmaps/default/app/config.yaml' },
  },
  {
    name: 'global secret key',
    key: 'global/secrets/default/db/password',
    want: { type: 'data', scope: { type: 'global' }, kind: 'secrets', namespace: 'default', name: 'db', key: 'password' },
  },
  {
    name: 'cluster configmap key',
    key: 'clusters/prod-eu/configmaps/default/app/k',
    want: { type: 'data', scope: { type: 'cluster', cluster: 'prod-eu' }, kind: 'configmaps', key: 'k', logicalPath: 'clusters/prod-eu/configmaps/default/app/k' },
  },
  {
    name: 'cluster secret key, name is a dotted subdomain',
    key: 'clusters/a/secrets/kube-system/tls.example.com/tls.crt',
    want: { type: 'data', scope: { type: 'cluster', cluster: 'a' }, kind: 'secrets', namespace: 'kube-system', name: 'tls.example.com', key: 'tls.crt' },
  },
  { name: 'key with every allowed character class', key: 'global/configmaps/ns/n/A-z_0.9', want: { type: 'data', key: 'A-z_0.9' } },
  { name: 'key starting with a single dot', key: 'global/configmaps/ns/n/.env', want: { type: 'data', key: '.env' } },
  { name: 'key with ".." inside (not leading)', key: 'global/configmaps/ns/n/a..b', want: { type: 'data', key: 'a..b' } },
  { name: 'key ending in ".."', key: 'global/configmaps/ns/n/a..', want: { type: 'data', key: 'a..' } },
  { name: '253-char key', key: `global/configmaps/ns/n/${key253}`, want: { type: 'data', key: key253 } },
  { name: '63-char namespace', key: `global/configmaps/${ns63}/n/k`, want: { type: 'data', namespace: ns63 } },
  { name: '253-char name', key: `global/configmaps/ns/${name253}/k`, want: { type: 'data', name: name253 } },
  { name: 'numeric-only namespace, name and cluster', key: 'clusters/1/configmaps/2/3/4', want: { type: 'data', scope: { type: 'cluster', cluster: '1' }, namespace: '2', name: '3', key: '4' } },

  // ---- @meta, recipients, status
  {
    name: 'global @meta',
    key: 'global/configmaps/default/app/@meta',
    want: { type: 'meta', scope: { type: 'global' }, kind: 'configmaps', namespace: 'default', name: 'app', logicalPath: 'global/configmaps/default/app/@meta' },
  },
  { name: 'cluster @meta', key: 'clusters/b/secrets/ns/n/@meta', want: { type: 'meta', scope: { type: 'cluster', cluster: 'b' }, kind: 'secrets' } },
  { name: 'recipient', key: 'recipients/prod-eu', want: { type: 'recipient', cluster: 'prod-eu' } },
  { name: 'status', key: 'status/prod-eu/node-1.example', want: { type: 'status', cluster: 'prod-eu', node: 'node-1.example' } },

  // ---- invalid: layout
  { name: 'rollout record', key: 'rollouts/20261205-142100-3fa2', want: { type: 'rollout', id: '20261205-142100-3fa2' } },
  { name: 'rollout lock', key: 'rollouts/@active/configmaps/default/app', want: { type: 'rollout-lock', ref: { kind: 'configmaps', namespace: 'default', name: 'app' } } },
  { name: 'rollout id not made by confsync', key: 'rollouts/my\x1bid', want: { invalid: 'rollout id "my\\x1bid" is not one confsync made' } },
  { name: 'rollout lock with a bad kind', key: 'rollouts/@active/pods/default/app', want: { invalid: 'expected rollouts/<id> or rollouts/@active/<kind>/<namespace>/<name>' } },
  { name: 'unknown top-level segment', key: 'foo/configmaps/ns/n/k', want: { invalid: 'expected global/, clusters/<cluster>/, recipients/, status/ or rollouts/' } },
  { name: 'empty key', key: '', want: { invalid: 'expected global/' } },
  { name: 'leading slash (prefix given without its trailing "/")', key: '/global/configmaps/ns/n/k', want: { invalid: 'expected global/' } },
  { name: 'Global (case matters)', key: 'Global/configmaps/ns/n/k', want: { invalid: 'expected global/' } },
  { name: 'bad kind', key: 'global/deployments/ns/n/k', want: { invalid: 'kind must be configmaps or secrets, not "deployments"' } },
  { name: 'singular kind', key: 'global/configmap/ns/n/k', want: { invalid: 'kind must be configmaps or secrets' } },
  { name: '"global" alone', key: 'global', want: { invalid: 'kind must be configmaps or secrets, not ""' } },
  { name: 'cluster scope without kind', key: 'clusters/a', want: { invalid: 'kind must be configmaps or secrets' } },
  { name: 'too few segments (no key)', key: 'global/configmaps/ns/n', want: { invalid: 'expected global/configmaps/<namespace>/<name>/<key>' } },
  { name: 'too few segments (no name)', key: 'clusters/a/secrets/ns', want: { invalid: 'expected clusters/a/secrets/<namespace>/<name>/<key>' } },
  { name: 'too many segments', key: 'global/configmaps/ns/n/k/extra', want: { invalid: 'expected global/configmaps/<namespace>/<name>/<key>' } },
  { name: 'trailing slash after key', key: 'global/configmaps/ns/n/k/', want: { invalid: 'expected global/configmaps/<namespace>/<name>/<key>' } },
  { name: 'too many segments after @meta', key: 'global/configmaps/ns/n/@meta/x', want: { invalid: 'expected global/configmaps/<namespace>/<name>/<key>' } },

  // ---- invalid: empty segments
  { name: 'empty namespace', key: 'global/configmaps//app/k', want: { invalid: 'namespace "" is not a DNS-1123 label' } },
  { name: 'empty name', key: 'global/configmaps/ns//k', want: { invalid: 'name "" is not a DNS-1123 subdomain' } },
  { name: 'empty key segment', key: 'global/configmaps/ns/n/', want: { invalid: 'must match [-._a-zA-Z0-9]+' } },
  { name: 'empty cluster', key: 'clusters//configmaps/ns/n/k', want: { invalid: 'cluster "" is not a DNS-1123 label' } },

  // ---- invalid: namespace / name
  { name: 'uppercase namespace', key: 'global/configmaps/Default/app/k', want: { invalid: 'namespace "Default" is not a DNS-1123 label' } },
  { name: '64-char namespace', key: `global/configmaps/${ns64}/app/k`, want: { invalid: `namespace "${ns64}"` } },
  { name: 'namespace with a dot (label, not subdomain)', key: 'global/configmaps/my.ns/app/k', want: { invalid: 'namespace "my.ns"' } },
  { name: 'namespace ending in "-"', key: 'global/configmaps/ns-/app/k', want: { invalid: 'namespace "ns-"' } },
  { name: 'name with ".."', key: 'global/configmaps/ns/a..b/k', want: { invalid: 'name "a..b" is not a DNS-1123 subdomain' } },
  { name: 'name ".."', key: 'global/configmaps/ns/../k', want: { invalid: 'name ".."' } },
  { name: 'name starting with "."', key: 'global/configmaps/ns/.app/k', want: { invalid: 'name ".app"' } },
  { name: 'uppercase name', key: 'global/secrets/ns/App/k', want: { invalid: 'name "App"' } },
  { name: '254-char name', key: `global/configmaps/ns/${name254}/k`, want: { invalid: 'is not a DNS-1123 subdomain' } },
  { name: 'namespace with NUL is escaped in the reason', key: 'global/configmaps/n\0s/app/k', want: { invalid: 'namespace "n\\x00s"' } },

  // ---- invalid: data key
  { name: 'key "..sneaky.txt"', key: 'global/configmaps/ns/n/..sneaky.txt', want: { invalid: 'must not be "." or start with ".."' } },
  { name: 'key "..data" (the projection\'s own link)', key: 'global/secrets/ns/n/..data', want: { invalid: 'start with ".."' } },
  { name: 'key "."', key: 'global/configmaps/ns/n/.', want: { invalid: 'key "." must not be "."' } },
  { name: 'key ".."', key: 'global/configmaps/ns/n/..', want: { invalid: 'key ".." must not be "."' } },
  { name: 'key with a space', key: 'global/configmaps/ns/n/my key', want: { invalid: 'key "my key" must match [-._a-zA-Z0-9]+' } },
  { name: 'key with a NUL byte', key: 'global/configmaps/ns/n/a\0b', want: { invalid: 'key "a\\x00b" must match' } },
  { name: 'key with a newline', key: 'global/configmaps/ns/n/a\nb', want: { invalid: 'key "a\\x0ab"' } },
  { name: 'key with non-ASCII letter', key: 'global/configmaps/ns/n/clé', want: { invalid: 'must match [-._a-zA-Z0-9]+' } },
  { name: 'key with a colon', key: 'global/configmaps/ns/n/a:b', want: { invalid: 'must match' } },
  { name: 'key "@meta2" is not @meta', key: 'global/configmaps/ns/n/@meta2', want: { invalid: 'must match' } },
  { name: 'key "@META" is not @meta', key: 'global/configmaps/ns/n/@META', want: { invalid: 'must match' } },
  { name: '254-char key', key: `global/configmaps/ns/n/${key254}`, want: { invalid: '(1-253 chars)' } },

  // ---- invalid: cluster names, recipients, status
  { name: 'uppercase cluster', key: 'clusters/Prod/configmaps/ns/n/k', want: { invalid: 'cluster "Prod" is not a DNS-1123 label' } },
  { name: 'cluster with a dot', key: 'clusters/prod.eu/configmaps/ns/n/k', want: { invalid: 'cluster "prod.eu"' } },
  { name: '64-char cluster', key: `clusters/${'c'.repeat(64)}/configmaps/ns/n/k`, want: { invalid: 'is not a DNS-1123 label' } },
  { name: 'cluster starting with "-"', key: 'clusters/-a/secrets/ns/n/k', want: { invalid: 'cluster "-a"' } },
  { name: 'recipients without cluster', key: 'recipients', want: { invalid: 'expected recipients/<cluster>' } },
  { name: 'recipients with empty cluster', key: 'recipients/', want: { invalid: 'cluster ""' } },
  { name: 'recipients with extra segment', key: 'recipients/a/b', want: { invalid: 'expected recipients/<cluster>' } },
  { name: 'recipients with invalid cluster', key: 'recipients/Prod', want: { invalid: 'cluster "Prod"' } },
  { name: 'status without node', key: 'status/a', want: { invalid: 'expected status/<cluster>/<node>' } },
  { name: 'status with empty node', key: 'status/a/', want: { invalid: 'expected status/<cluster>/<node>' } },
  { name: 'status with extra segment', key: 'status/a/n/x', want: { invalid: 'expected status/<cluster>/<node>' } },

  // ---- templates (render/): <scope>/templates/<name>, name a DNS-1123 label
  { name: 'global template', key: 'global/templates/nginx-upstream', want: { type: 'template', scope: { type: 'global' }, name: 'nginx-upstream', logicalPath: 'global/templates/nginx-upstream' } },
  { name: 'cluster template', key: 'clusters/eu/templates/app-env', want: { type: 'template', scope: { type: 'cluster', cluster: 'eu' }, name: 'app-env' } },
  { name: 'template name with a dot', key: 'global/templates/a.b', want: { invalid: 'template name "a.b" is not a DNS-1123 label' } },
  { name: 'template name in capitals', key: 'global/templates/Web', want: { invalid: 'template name "Web"' } },
  { name: 'template below a template', key: 'global/templates/a/b', want: { invalid: 'expected global/templates/<name>' } },
  { name: 'templates without a name', key: 'clusters/eu/templates', want: { invalid: 'expected clusters/eu/templates/<name>' } },
];

for (const c of cases) {
  test(`parseKey: ${c.name}`, () => {
    const got = parseKey(c.key);
    if ('invalid' in c.want) {
      assert.equal(got.type, 'invalid', `${printable(c.key)} parsed as ${JSON.stringify(got)}`);
      const reason = (got as { reason: string }).reason;
      assert.ok(reason.includes(c.want.invalid), `reason ${JSON.stringify(reason)} lacks ${JSON.stringify(c.want.invalid)}`);
      return;
    }
    assert.notEqual(got.type, 'invalid', `${printable(c.key)}: ${JSON.stringify(got)}`);
    const picked = Object.fromEntries(Object.keys(c.want).map((k) => [k, (got as Record<string, unknown>)[k]]));
    assert.deepEqual(picked, c.want);
  });
}

test('parseKey: the table covers at least 30 keys, valid and invalid', () => {
  assert.ok(cases.length >= 30);
  assert.ok(cases.some((c) => 'invalid' in c.want) && cases.some((c) => !('invalid' in c.want)));
});

test('parseKey: a data key parses to exactly the documented fields', () => {
  assert.deepEqual(parseKey('clusters/a/secrets/ns/db/password'), {
    type: 'data',
    scope: { type: 'cluster', cluster: 'a' },
    kind: 'secrets',
    namespace: 'ns',
    name: 'db',
    key: 'password',
    logicalPath: 'clusters/a/secrets/ns/db/password',
  });
});

test('parseKey: every valid data, meta and template key of the table has the canonical logical path (the store keeps the input as it)', () => {
  let checked = 0;
  for (const c of cases) {
    const got = parseKey(c.key);
    if (got.type === 'data' || got.type === 'meta') {
      assert.equal(got.logicalPath, logicalPath(got.scope, got, got.type === 'meta' ? META_KEY : got.key), c.name);
      checked++;
    } else if (got.type === 'template') {
      assert.equal(got.logicalPath, templatePath(got.scope, got.name), c.name);
      checked++;
    }
  }
  assert.ok(checked >= 8, `only ${checked} valid keys in the table`);
});

// Reasons end up in logs, status JSON and metrics labels: one line, no raw control bytes.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
const controlKeys: { name: string; key: string }[] = [
  { name: 'in the kind', key: 'global/config\nmaps/ns/n/k' },
  { name: 'in the namespace', key: 'global/configmaps/n\x1bs/n/k' },
  { name: 'in the name', key: 'global/configmaps/ns/a\rb/k' },
  { name: 'in the data key', key: 'global/configmaps/ns/n/k\x7f' },
  // Both cluster cases once returned clusterError() unescaped (raw "\n" / NUL in the reason).
  { name: 'in the cluster of a data key', key: 'clusters/a\nb/configmaps/ns/n/k' },
  { name: 'in the cluster of a recipient key', key: 'recipients/a\0b' },
];
for (const c of controlKeys) {
  test(`parseKey: a control byte ${c.name} is escaped in the reason`, () => {
    const got = parseKey(c.key);
    assert.equal(got.type, 'invalid');
    const reason = (got as { reason: string }).reason;
    assert.ok(!CONTROL.test(reason), `reason has a raw control byte: ${JSON.stringify(reason)}`);
    assert.match(reason, /\\x[0-9a-f]{2}/);
  });
}

const printableCases: [string, string][] = [
  ['plain-text.yaml', 'plain-text.yaml'],
  ['', ''],
  ['a\0b', 'a\\x00b'],
  ['line1\nline2', 'line1\\x0aline2'],
  ['\r\t\x1b[31m', '\\x0d\\x09\\x1b[31m'],
  ['\x1f\x7f', '\\x1f\\x7f'],
  ['café ✓', 'café ✓'],
  [' ~', ' ~'],
];
for (const [input, want] of printableCases) {
  test(`printable(${JSON.stringify(input)})`, () => {
    const got = printable(input);
    assert.equal(got, want);
    assert.ok(!CONTROL.test(got));
  });
}

test('printable escapes every C0 control byte and DEL, nothing else in ASCII', () => {
  for (let c = 0; c < 128; c++) {
    const s = String.fromCharCode(c);
    const want = c < 0x20 || c === 0x7f ? `\\x${c.toString(16).padStart(2, '0')}` : s;
    assert.equal(printable(s), want, `char ${c}`);
  }
});

// The validators on their own: undefined means valid.
const validators: [string, (s: string) => string | undefined, string, boolean][] = [
  ['namespaceError', namespaceError, 'kube-system', true],
  ['namespaceError', namespaceError, ns63, true],
  ['namespaceError', namespaceError, ns64, false],
  ['namespaceError', namespaceError, 'a.b', false],
  ['namespaceError', namespaceError, '', false],
  ['nameError', nameError, 'a.b-c', true],
  ['nameError', nameError, name253, true],
  ['nameError', nameError, name254, false],
  ['nameError', nameError, 'a..b', false],
  ['nameError', nameError, 'a.', false],
  ['dataKeyError', dataKeyError, '.a', true],
  ['dataKeyError', dataKeyError, key253, true],
  ['dataKeyError', dataKeyError, key254, false],
  ['dataKeyError', dataKeyError, '..a', false],
  ['dataKeyError', dataKeyError, '', false],
  ['dataKeyError', dataKeyError, 'a/b', false],
  ['clusterError', clusterError, 'prod-eu-1', true],
  ['clusterError', clusterError, 'c'.repeat(63), true],
  ['clusterError', clusterError, 'c'.repeat(64), false],
  ['clusterError', clusterError, 'prod_eu', false],
  ['clusterError', clusterError, 'a-', false],
];
for (const [fname, fn, input, valid] of validators) {
  test(`${fname}(${JSON.stringify(input.length > 20 ? `${input.slice(0, 8)}…(${input.length})` : input)}) is ${valid ? 'valid' : 'invalid'}`, () => {
    const err = fn(input);
    if (valid) assert.equal(err, undefined);
    else assert.equal(typeof err, 'string');
  });
}
