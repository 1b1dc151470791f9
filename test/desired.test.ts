import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildObject, hashObject, type BuildContext, type BuildResult, type ObjectKeys, type StoredKv } from '../src/desired/build.js';
import { parseMeta, placementAdmits } from '../src/desired/meta.js';
import { KeyStore } from '../src/desired/store.js';
import type { DesiredObject } from '../src/desired/types.js';
import { objectId, type ObjectKind } from '../src/keyspace.js';
import { matchesGlob } from '../src/glob.js';
import type { Kv } from '../src/source/types.js';

/**
 * The pure core: etcd keys -> the object this cluster should have. Inputs are
 * written as a layout of one object's keys and fed through a real KeyStore, so
 * each row reads like what an operator would `etcdctl put`.
 */

const PREFIX = '/confsync/';
const NS = 'default';
const NAME = 'app';

interface Layout {
  kind?: ObjectKind;
  global?: Record<string, string>;
  /** Keys under clusters/<this cluster>/. */
  cluster?: Record<string, string>;
  /** Keys under other clusters' scopes: cluster name -> keys. */
  others?: Record<string, Record<string, string>>;
  /** An object is JSON-encoded; a string is stored as is (to write bad JSON). */
  globalMeta?: unknown;
  clusterMeta?: unknown;
}

const metaValue = (m: unknown) => Buffer.from(typeof m === 'string' ? m : JSON.stringify(m));

/** The etcd kvs of a layout, mod revisions 1, 2, 3… in the order written. */
function kvsOf(l: Layout, me: string): Kv[] {
  const kind = l.kind ?? 'configmaps';
  const out: [string, Buffer][] = [];
  const obj = (scope: string) => `${PREFIX}${scope}/${kind}/${NS}/${NAME}`;
  if (l.globalMeta !== undefined) out.push([`${obj('global')}/@meta`, metaValue(l.globalMeta)]);
  for (const [k, v] of Object.entries(l.global ?? {})) out.push([`${obj('global')}/${k}`, Buffer.from(v)]);
  if (l.clusterMeta !== undefined) out.push([`${obj(`clusters/${me}`)}/@meta`, metaValue(l.clusterMeta)]);
  for (const [k, v] of Object.entries(l.cluster ?? {})) out.push([`${obj(`clusters/${me}`)}/${k}`, Buffer.from(v)]);
  for (const [c, keys] of Object.entries(l.others ?? {})) for (const [k, v] of Object.entries(keys)) out.push([`${obj(`clusters/${c}`)}/${k}`, Buffer.from(v)]);
  return out.map(([key, value], i) => ({ key, value, modRevision: i + 1 }));
}

function emptyKeys(kind: ObjectKind): ObjectKeys {
  return { kind, namespace: NS, name: NAME, global: new Map(), cluster: new Map() };
}

/** The object's keys as cluster `me`'s KeyStore sees them. */
function keysOf(l: Layout, me = 'a'): ObjectKeys {
  const kind = l.kind ?? 'configmaps';
  const store = new KeyStore(PREFIX, me);
  const { invalid } = store.reset(kvsOf(l, me));
  assert.deepEqual(invalid, []);
  return store.objects.get(objectId(kind, NS, NAME)) ?? emptyKeys(kind);
}

/** Secrets "open" to `plain:<sealed>`; paths listed in `fail` do not open. */
function ctxOf(cluster = 'a', labels: Record<string, string> = {}, fail: string[] = []): BuildContext & { calls: string[] } {
  const calls: string[] = [];
  return {
    cluster,
    labels,
    calls,
    secret: (kv) => {
      calls.push(kv.path);
      if (fail.includes(kv.path)) return { error: 'no recipient entry for this cluster' };
      return Buffer.from(`plain:${kv.value.toString()}`);
    },
  };
}

function build(l: Layout, ctx: BuildContext = ctxOf(), previous?: DesiredObject): BuildResult {
  return buildObject(keysOf(l, ctx.cluster), ctx, previous);
}

function objectOf(r: BuildResult): DesiredObject {
  assert.equal(r.type, 'object', `expected an object, got ${JSON.stringify(r)}`);
  return (r as { object: DesiredObject }).object;
}

const dataOf = (o: DesiredObject) => Object.fromEntries([...o.data].map(([k, v]) => [k, v.toString()]));

// ---------------------------------------------------------------- overrides

const overrideCases: { name: string; layout: Layout; want: Record<string, string> | 'absent' }[] = [
  { name: 'global only', layout: { global: { a: 'g1', b: 'g2' } }, want: { a: 'g1', b: 'g2' } },
  { name: 'cluster only', layout: { cluster: { a: 'c1' } }, want: { a: 'c1' } },
  { name: 'both: cluster wins per key, other keys from global', layout: { global: { a: 'g', b: 'g' }, cluster: { a: 'c' } }, want: { a: 'c', b: 'g' } },
  { name: 'both, disjoint keys: union', layout: { global: { a: 'g' }, cluster: { b: 'c' } }, want: { a: 'g', b: 'c' } },
  { name: 'cluster overrides every key', layout: { global: { a: 'g', b: 'g' }, cluster: { a: 'c', b: 'c' } }, want: { a: 'c', b: 'c' } },
  { name: 'other clusters\' keys never appear', layout: { global: { a: 'g' }, others: { b: { a: 'b', x: 'b' }, c: { y: 'c' } } }, want: { a: 'g' } },
  { name: 'own override beside other clusters\' overrides', layout: { global: { a: 'g' }, cluster: { a: 'mine' }, others: { b: { a: 'theirs' } } }, want: { a: 'mine' } },
  { name: 'only other clusters\' keys: absent here', layout: { others: { b: { a: 'b' } } }, want: 'absent' },
  { name: 'empty value is still a key', layout: { global: { a: '' } }, want: { a: '' } },
];

for (const c of overrideCases) {
  test(`overrides: ${c.name}`, () => {
    const r = build(c.layout);
    if (c.want === 'absent') assert.deepEqual(r, { type: 'absent', problems: [] });
    else {
      assert.deepEqual(r.problems, []);
      assert.deepEqual(dataOf(objectOf(r)), c.want);
    }
  });
}

test('overrides: a KeyStore for cluster a keeps no keys of clusters/b', () => {
  const store = new KeyStore(PREFIX, 'a');
  const { dirty } = store.reset(kvsOf({ others: { b: { x: '1' } } }, 'a'));
  assert.deepEqual([...dirty], []);
  assert.equal(store.objects.size, 0);
  store.reset(kvsOf({ global: { x: 'g' }, others: { b: { x: 'b', y: 'b' } } }, 'a'));
  const keys = store.objects.get('configmaps/default/app')!;
  assert.deepEqual([...keys.global.keys()], ['x']);
  assert.deepEqual([...keys.cluster.keys()], []);
});

test('overrides: binary config values pass through byte for byte', () => {
  const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a]);
  const keys = emptyKeys('configmaps');
  keys.global.set('bin', { key: 'x', value: bytes, modRevision: 3, path: 'global/configmaps/default/app/bin' });
  const o = objectOf(buildObject(keys, ctxOf()));
  assert.ok(o.data.get('bin')!.equals(bytes));
});

// ---------------------------------------------------------------- @meta merge

const metaCases: { name: string; layout: Layout; want: Partial<Pick<DesiredObject, 'labels' | 'annotations' | 'type' | 'immutable'>> }[] = [
  { name: 'no @meta: empty labels/annotations, no type/immutable', layout: { global: { k: 'v' } }, want: { labels: {}, annotations: {}, type: undefined, immutable: undefined } },
  { name: 'global labels only', layout: { global: { k: 'v' }, globalMeta: { labels: { team: 'x' } } }, want: { labels: { team: 'x' }, annotations: {} } },
  { name: 'cluster labels only', layout: { global: { k: 'v' }, clusterMeta: { labels: { team: 'y' } } }, want: { labels: { team: 'y' } } },
  {
    name: 'labels merge, cluster on top',
    layout: { global: { k: 'v' }, globalMeta: { labels: { x: 'g', y: 'g' } }, clusterMeta: { labels: { y: 'c', z: 'c' } } },
    want: { labels: { x: 'g', y: 'c', z: 'c' } },
  },
  {
    name: 'annotations merge, cluster on top',
    layout: { global: { k: 'v' }, globalMeta: { annotations: { 'a.io/x': 'g', 'a.io/y': 'g' } }, clusterMeta: { annotations: { 'a.io/y': 'c' } } },
    want: { annotations: { 'a.io/x': 'g', 'a.io/y': 'c' } },
  },
  { name: 'global type', layout: { kind: 'secrets', global: { k: 'v' }, globalMeta: { type: 'kubernetes.io/tls' } }, want: { type: 'kubernetes.io/tls' } },
  { name: 'cluster type wins', layout: { kind: 'secrets', global: { k: 'v' }, globalMeta: { type: 'kubernetes.io/tls' }, clusterMeta: { type: 'Opaque' } }, want: { type: 'Opaque' } },
  { name: 'cluster type when global has none', layout: { kind: 'secrets', global: { k: 'v' }, clusterMeta: { type: 'x/y' } }, want: { type: 'x/y' } },
  { name: 'global immutable', layout: { global: { k: 'v' }, globalMeta: { immutable: true } }, want: { immutable: true } },
  { name: 'cluster immutable=false beats global true', layout: { global: { k: 'v' }, globalMeta: { immutable: true }, clusterMeta: { immutable: false } }, want: { immutable: false } },
  { name: 'cluster @meta without immutable keeps global\'s', layout: { global: { k: 'v' }, globalMeta: { immutable: true }, clusterMeta: { labels: {} } }, want: { immutable: true } },
  { name: 'empty @meta {} is valid', layout: { global: { k: 'v' }, globalMeta: {}, clusterMeta: {} }, want: { labels: {}, annotations: {} } },
  { name: 'other clusters\' @meta is not read', layout: { global: { k: 'v' }, others: { b: { '@meta': JSON.stringify({ labels: { b: '1' } }) } } }, want: { labels: {} } },
];

for (const c of metaCases) {
  test(`@meta: ${c.name}`, () => {
    const o = objectOf(build(c.layout));
    const picked = Object.fromEntries(Object.keys(c.want).map((k) => [k, o[k as keyof DesiredObject]]));
    assert.deepEqual(picked, c.want);
  });
}

// ---------------------------------------------------------------- bad @meta

const badMetaCases: { name: string; layout: Layout; path: string; reason: string }[] = [
  { name: 'global @meta not JSON', layout: { global: { k: 'v' }, globalMeta: '{labels:' }, path: 'global/configmaps/default/app/@meta', reason: 'not valid JSON' },
  { name: 'cluster @meta not JSON', layout: { global: { k: 'v' }, clusterMeta: 'nope' }, path: 'clusters/a/configmaps/default/app/@meta', reason: 'not valid JSON' },
  { name: 'empty @meta value', layout: { global: { k: 'v' }, globalMeta: '' }, path: 'global/configmaps/default/app/@meta', reason: 'not valid JSON' },
  { name: 'unknown top-level field', layout: { global: { k: 'v' }, globalMeta: { lables: { a: 'b' } } }, path: 'global/configmaps/default/app/@meta', reason: 'unknown field lables' },
  { name: 'unknown placement field', layout: { global: { k: 'v' }, globalMeta: { placement: { cluster: ['a'] } } }, path: 'global/configmaps/default/app/@meta', reason: 'unknown field placement.cluster' },
  { name: 'unknown clusterSelector field', layout: { global: { k: 'v' }, globalMeta: { placement: { clusterSelector: { matchLabels: {}, matchExpressions: [] } } } }, path: 'global/configmaps/default/app/@meta', reason: 'unknown field placement.clusterSelector.matchExpressions' },
  { name: 'label value not a string', layout: { global: { k: 'v' }, clusterMeta: { labels: { n: 1 } } }, path: 'clusters/a/configmaps/default/app/@meta', reason: 'field labels.n' },
  { name: 'immutable not a boolean', layout: { global: { k: 'v' }, globalMeta: { immutable: 'yes' } }, path: 'global/configmaps/default/app/@meta', reason: 'field immutable' },
  { name: 'empty type', layout: { global: { k: 'v' }, globalMeta: { type: '' } }, path: 'global/configmaps/default/app/@meta', reason: 'field type' },
  { name: 'clusters not an array', layout: { global: { k: 'v' }, globalMeta: { placement: { clusters: 'a' } } }, path: 'global/configmaps/default/app/@meta', reason: 'field placement.clusters' },
  { name: 'JSON null', layout: { global: { k: 'v' }, globalMeta: 'null' }, path: 'global/configmaps/default/app/@meta', reason: '@meta' },
  { name: 'JSON array', layout: { global: { k: 'v' }, globalMeta: '[]' }, path: 'global/configmaps/default/app/@meta', reason: '@meta' },
];

for (const c of badMetaCases) {
  test(`bad @meta holds the object: ${c.name}`, () => {
    const r = build(c.layout);
    assert.equal(r.type, 'hold');
    assert.equal(r.problems.length, 1);
    assert.equal(r.problems[0]!.path, c.path);
    assert.ok(r.problems[0]!.reason.includes(c.reason), r.problems[0]!.reason);
    assert.ok(!r.problems[0]!.reason.includes('\n'));
  });
}

test('bad @meta: the reason never echoes the value', () => {
  const r = build({ global: { k: 'v' }, globalMeta: '{"labels": "hunter2-secret"}' });
  assert.equal(r.type, 'hold');
  assert.ok(!JSON.stringify(r).includes('hunter2'), JSON.stringify(r));
});

test('parseMeta: valid and invalid values', () => {
  assert.deepEqual(parseMeta(Buffer.from('{"labels":{"a":"b"},"immutable":true}')), { meta: { labels: { a: 'b' }, immutable: true } });
  assert.ok('error' in parseMeta(Buffer.from('{"bogus":1}')));
  assert.ok('error' in parseMeta(Buffer.from([0xff, 0xfe])));
});

// ---------------------------------------------------------------- placement

const here = { cluster: 'prod-eu', labels: { region: 'eu', tier: '1' } };
const placementCases: { name: string; cluster?: string; labels?: Record<string, string>; placement: unknown; admitted: boolean }[] = [
  { name: 'no placement: everywhere', placement: undefined, admitted: true },
  { name: 'empty placement: everywhere', placement: {}, admitted: true },
  { name: 'clusters exact match', placement: { clusters: ['prod-eu'] }, admitted: true },
  { name: 'clusters exact, other name', placement: { clusters: ['prod-us'] }, admitted: false },
  { name: 'clusters glob prod-*', placement: { clusters: ['prod-*'] }, admitted: true },
  { name: 'clusters glob staging-*', placement: { clusters: ['staging-*'] }, admitted: false },
  { name: 'clusters glob * ', placement: { clusters: ['*'] }, admitted: true },
  { name: 'glob is anchored: "prod" does not match prod-eu', placement: { clusters: ['prod'] }, admitted: false },
  { name: 'glob is anchored: "*-e" does not match prod-eu', placement: { clusters: ['*-e'] }, admitted: false },
  { name: '?a matches "ba"', cluster: 'ba', placement: { clusters: ['?a'] }, admitted: true },
  { name: '?a does not match "bba"', cluster: 'bba', placement: { clusters: ['?a'] }, admitted: false },
  { name: '?a does not match "a"', cluster: 'a', placement: { clusters: ['?a'] }, admitted: false },
  { name: '"." in a glob is literal', cluster: 'prodxeu', placement: { clusters: ['prod.eu'] }, admitted: false },
  { name: 'any of several globs', placement: { clusters: ['dev', 'staging-*', 'prod-e?'] }, admitted: true },
  { name: 'empty cluster list admits nobody', placement: { clusters: [] }, admitted: false },
  { name: 'matchLabels match', placement: { clusterSelector: { matchLabels: { region: 'eu' } } }, admitted: true },
  { name: 'matchLabels all must match', placement: { clusterSelector: { matchLabels: { region: 'eu', tier: '1' } } }, admitted: true },
  { name: 'matchLabels value differs', placement: { clusterSelector: { matchLabels: { region: 'us' } } }, admitted: false },
  { name: 'matchLabels one of two differs', placement: { clusterSelector: { matchLabels: { region: 'eu', tier: '2' } } }, admitted: false },
  { name: 'matchLabels label missing', placement: { clusterSelector: { matchLabels: { zone: 'a' } } }, admitted: false },
  { name: 'matchLabels on a cluster without labels', labels: {}, placement: { clusterSelector: { matchLabels: { region: 'eu' } } }, admitted: false },
  { name: 'empty matchLabels admits everyone', placement: { clusterSelector: { matchLabels: {} } }, admitted: true },
  { name: 'both match (AND)', placement: { clusters: ['prod-*'], clusterSelector: { matchLabels: { region: 'eu' } } }, admitted: true },
  { name: 'clusters match, selector does not (AND)', placement: { clusters: ['prod-*'], clusterSelector: { matchLabels: { region: 'us' } } }, admitted: false },
  { name: 'selector matches, clusters do not (AND)', placement: { clusters: ['dev-*'], clusterSelector: { matchLabels: { region: 'eu' } } }, admitted: false },
];

for (const c of placementCases) {
  test(`placement: ${c.name}`, () => {
    const cluster = c.cluster ?? here.cluster;
    const labels = c.labels ?? here.labels;
    const meta = c.placement === undefined ? undefined : { placement: c.placement as never };
    assert.equal(placementAdmits(meta, cluster, labels), c.admitted);
    const r = build({ global: { k: 'v' }, globalMeta: meta ?? {} }, ctxOf(cluster, labels));
    if (c.admitted) assert.deepEqual(dataOf(objectOf(r)), { k: 'v' });
    else assert.deepEqual(r, { type: 'absent', problems: [] });
  });
}

test('glob: `*` and `?` as a shell means them; everything else is literal', () => {
  for (const [name, glob, want] of [
    ['prod-eu-west-1', 'prod-*', true],
    ['prod-eu-west-1', '*-west-?', true],
    ['prod-eu-west-1', '*-west-??', false],
    ['prod', 'prod*', true],
    ['', '*', true],
    ['', '?', false],
    ['a.b', 'a?b', true],
    ['abcabd', '*abd', true],
    ['abcab', '*abd', false],
    ['a+b', 'a+b', true],
    ['aab', 'a+b', false],
    ['(x)', '(x)', true],
    ['a$', 'a$', true],
    ['configmaps/default/app', 'configmaps/default/*', true],
    ['secrets/default/app', 'configmaps/*', false],
  ] as const) {
    assert.equal(matchesGlob(name, glob), want, `${name} ~ ${glob}`);
  }
});

const excludeOther = { placement: { clusters: ['other-*'] } };

test('placement: excluded global object without cluster keys is absent', () => {
  assert.deepEqual(build({ global: { a: 'g' }, globalMeta: excludeOther }), { type: 'absent', problems: [] });
});

test('placement: excluded global object, cluster keys still apply (and only they)', () => {
  const o = objectOf(build({ global: { a: 'g', b: 'g' }, globalMeta: excludeOther, cluster: { a: 'c' } }));
  assert.deepEqual(dataOf(o), { a: 'c' });
});

test('placement: excluded global secret is never opened', () => {
  const ctx = ctxOf('a', {}, ['global/secrets/default/app/k']);
  const r = build({ kind: 'secrets', global: { k: 's' }, globalMeta: excludeOther }, ctx);
  assert.deepEqual(r, { type: 'absent', problems: [] });
  assert.deepEqual(ctx.calls, []);
});

test('placement: excluded global object with only a cluster @meta is absent', () => {
  assert.equal(build({ global: { a: 'g' }, globalMeta: excludeOther, clusterMeta: { labels: { x: 'y' } } }).type, 'absent');
});

test(
  'placement: an excluded global object\'s @meta does not shape the cluster-only object',
  () => {
    const o = objectOf(
      build({ global: { a: 'g' }, globalMeta: { labels: { team: 'g' }, annotations: { n: 'g' }, immutable: true, ...excludeOther }, cluster: { a: 'c' } }),
    );
    assert.deepEqual({ labels: o.labels, annotations: o.annotations, immutable: o.immutable }, { labels: {}, annotations: {}, immutable: undefined });
  },
);

// ---------------------------------------------------------------- secrets

const G = (k: string) => `global/secrets/default/app/${k}`;
const C = (k: string) => `clusters/a/secrets/default/app/${k}`;

test('secrets: opened values become data; ctx.secret gets the logical path', () => {
  const ctx = ctxOf();
  const o = objectOf(build({ kind: 'secrets', global: { user: 'u', pass: 'p' }, cluster: { pass: 'cp' } }, ctx));
  assert.deepEqual(dataOf(o), { user: 'plain:u', pass: 'plain:cp' });
  // Only each key's winning value is opened: the overridden global `pass` is not.
  assert.deepEqual(ctx.calls.sort(), [C('pass'), G('user')].sort());
});

test('secrets: configmap values are never passed to ctx.secret', () => {
  const ctx = ctxOf();
  objectOf(build({ global: { a: '1' }, cluster: { b: '2' } }, ctx));
  assert.deepEqual(ctx.calls, []);
});

test('secrets: a failing secret with a previous value keeps it and reports the problem', () => {
  const layout: Layout = { kind: 'secrets', global: { user: 'u', pass: 'p1' } };
  const previous = objectOf(build(layout));
  const r = build({ kind: 'secrets', global: { user: 'u', pass: 'p2' } }, ctxOf('a', {}, [G('pass')]), previous);
  const o = objectOf(r);
  assert.deepEqual(dataOf(o), { user: 'plain:u', pass: 'plain:p1' });
  assert.deepEqual(r.problems, [{ path: G('pass'), reason: 'no recipient entry for this cluster', unopened: true }]);
});

test('secrets: a failing cluster override with a previous value keeps the previous (override) value', () => {
  const previous = objectOf(build({ kind: 'secrets', global: { pass: 'g' }, cluster: { pass: 'c1' } }));
  const r = build({ kind: 'secrets', global: { pass: 'g' }, cluster: { pass: 'c2' } }, ctxOf('a', {}, [C('pass')]), previous);
  assert.deepEqual(dataOf(objectOf(r)), { pass: 'plain:c1' });
  assert.deepEqual(r.problems.map((p) => p.path), [C('pass')]);
});

test('secrets: a failing secret without a previous value is left out; the other keys go live', () => {
  const r = build({ kind: 'secrets', global: { user: 'u', pass: 'p' } }, ctxOf('a', {}, [G('pass')]));
  assert.deepEqual(dataOf(objectOf(r)), { user: 'plain:u' });
  assert.deepEqual(r.problems, [{ path: G('pass'), reason: 'no recipient entry for this cluster', unopened: true }]);
});

test("secrets: with unopened: 'hold' (a sink may hold a last good value we never saw), the object is held", () => {
  const r = build({ kind: 'secrets', global: { user: 'u', pass: 'p' } }, { ...ctxOf('a', {}, [G('pass')]), unopened: 'hold' });
  assert.equal(r.type, 'hold');
});

test('secrets: a previous object lacking the failing key does not help: the key stays out, the rest goes live', () => {
  const previous = objectOf(build({ kind: 'secrets', global: { user: 'u' } }));
  const r = build({ kind: 'secrets', global: { user: 'u2', pass: 'p' } }, ctxOf('a', {}, [G('pass')]), previous);
  assert.deepEqual(dataOf(objectOf(r)), { user: 'plain:u2' });
});

test('secrets: a failing override with no previous value is left out (never falls back to the global value it replaces)', () => {
  const r = build({ kind: 'secrets', global: { pass: 'g', user: 'u' }, cluster: { pass: 'c' } }, ctxOf('a', {}, [C('pass')]));
  assert.deepEqual(dataOf(objectOf(r)), { user: 'plain:u' });
  assert.deepEqual(r.problems.map((p) => p.path), [C('pass')]);
});

test('secrets: when no key opens and there is no previous value, the object is held (absent would delete what a sink holds)', () => {
  const r = build({ kind: 'secrets', global: { pass: 'g' } }, ctxOf('a', {}, [G('pass')]));
  assert.equal(r.type, 'hold');
});

test('limits: an object over maxKeys or maxBytes is held with a reason naming the limit', () => {
  const many = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`k${i}`, 'v']));
  const r = build({ global: many }, { ...ctxOf(), limits: { maxKeys: 10, maxBytes: 1000 } });
  assert.equal(r.type, 'hold');
  assert.match(r.problems[0]!.reason, /11 keys, over limits\.maxObjectKeys \(10\)/);
  const big = build({ global: { a: 'x'.repeat(600), b: 'y'.repeat(600) } }, { ...ctxOf(), limits: { maxKeys: 10, maxBytes: 1000 } });
  assert.equal(big.type, 'hold');
  assert.match(big.problems[0]!.reason, /1200 bytes, over limits\.maxObjectBytes/);
  assert.equal(build({ global: many }, { ...ctxOf(), limits: { maxKeys: 11, maxBytes: 1000 } }).type, 'object');
});

test(
  'secrets: a global value this cluster cannot open, overridden by one it can, does not hold the object',
  () => {
    const r = build({ kind: 'secrets', global: { pass: 'sealed-for-others' }, cluster: { pass: 'c' } }, ctxOf('a', {}, [G('pass')]));
    assert.deepEqual(dataOf(objectOf(r)), { pass: 'plain:c' });
  },
);

test('secrets: problems never hold a value', () => {
  const r = build({ kind: 'secrets', global: { pass: 'TOPSECRET' } }, ctxOf('a', {}, [G('pass')]));
  assert.ok(!JSON.stringify(r).includes('TOPSECRET'));
});

// ---------------------------------------------------------------- absent

const absentCases: { name: string; layout: Layout }[] = [
  { name: 'no keys at all', layout: {} },
  { name: 'global @meta only', layout: { globalMeta: { labels: { a: 'b' } } } },
  { name: 'cluster @meta only', layout: { clusterMeta: { labels: { a: 'b' } } } },
  { name: 'both @meta, no data', layout: { globalMeta: {}, clusterMeta: {}, kind: 'secrets' } },
];
for (const c of absentCases) {
  test(`absent: ${c.name}`, () => {
    assert.deepEqual(build(c.layout), { type: 'absent', problems: [] });
  });
}

// ---------------------------------------------------------------- revision

function keysWithRevisions(r: { g?: number[]; c?: number[]; gm?: number; cm?: number }): ObjectKeys {
  const keys = emptyKeys('configmaps');
  const kv = (modRevision: number): StoredKv => ({ key: 'k', value: Buffer.from('{}'), modRevision, path: 'global/configmaps/default/app/k' });
  (r.g ?? []).forEach((rev, i) => keys.global.set(`g${i}`, kv(rev)));
  (r.c ?? []).forEach((rev, i) => keys.cluster.set(`c${i}`, kv(rev)));
  if (r.gm) keys.globalMeta = kv(r.gm);
  if (r.cm) keys.clusterMeta = kv(r.cm);
  return keys;
}

const revisionCases: { name: string; revs: Parameters<typeof keysWithRevisions>[0]; want: number }[] = [
  { name: 'one global key', revs: { g: [7] }, want: 7 },
  { name: 'max of global keys, any order', revs: { g: [9, 3, 12, 5] }, want: 12 },
  { name: 'cluster key newer than global', revs: { g: [4], c: [10] }, want: 10 },
  { name: 'global key newer than cluster', revs: { g: [40], c: [10] }, want: 40 },
  { name: 'global @meta newest', revs: { g: [4], c: [5], gm: 30 }, want: 30 },
  { name: 'cluster @meta newest', revs: { g: [4], gm: 6, cm: 31 }, want: 31 },
  { name: 'overridden global key still counts', revs: { g: [50], c: [2] }, want: 50 },
];
for (const c of revisionCases) {
  test(`revision: ${c.name}`, () => {
    assert.equal(objectOf(buildObject(keysWithRevisions(c.revs), ctxOf())).revision, c.want);
  });
}

// ---------------------------------------------------------------- hash

const base: Layout = { global: { a: '1', b: '2' }, cluster: { c: '3' }, globalMeta: { labels: { x: '1', y: '2' }, annotations: { n: 'v' } } };
const hashOf = (l: Layout) => objectOf(build(l)).hash;

test('hash: 64 hex characters', () => {
  assert.match(hashOf(base), /^[0-9a-f]{64}$/);
});

test('hash: same input regardless of insertion order gives the same hash', () => {
  const reordered: Layout = { cluster: { c: '3' }, global: { b: '2', a: '1' }, globalMeta: { annotations: { n: 'v' }, labels: { y: '2', x: '1' } } };
  assert.equal(hashOf(reordered), hashOf(base));
  // And on the Map/Record level directly.
  const m1 = new Map([['a', Buffer.from('1')], ['b', Buffer.from('2')]]);
  const m2 = new Map([['b', Buffer.from('2')], ['a', Buffer.from('1')]]);
  assert.equal(hashObject(m1, { labels: { p: '1', q: '2' }, annotations: {} }), hashObject(m2, { labels: { q: '2', p: '1' }, annotations: {} }));
});

test('hash: mod revisions alone do not change it', () => {
  const k1 = keysOf(base);
  const k2 = keysOf(base);
  for (const [k, kv] of k2.global) k2.global.set(k, { ...kv, modRevision: kv.modRevision + 1000 });
  assert.equal(objectOf(buildObject(k1, ctxOf())).hash, objectOf(buildObject(k2, ctxOf())).hash);
});

const hashVariants: { name: string; layout: Layout }[] = [
  { name: 'a label value changes', layout: { ...base, globalMeta: { labels: { x: '1', y: 'CHANGED' }, annotations: { n: 'v' } } } },
  { name: 'a label is added', layout: { ...base, globalMeta: { labels: { x: '1', y: '2', z: '3' }, annotations: { n: 'v' } } } },
  { name: 'a label key is renamed', layout: { ...base, globalMeta: { labels: { x: '1', Y: '2' }, annotations: { n: 'v' } } } },
  { name: 'a label moves to annotations', layout: { ...base, globalMeta: { labels: { x: '1' }, annotations: { n: 'v', y: '2' } } } },
  { name: 'an annotation value changes', layout: { ...base, globalMeta: { labels: { x: '1', y: '2' }, annotations: { n: 'w' } } } },
  { name: 'a data value changes', layout: { ...base, global: { a: '1', b: '22' } } },
  { name: 'a data key is renamed', layout: { ...base, global: { a: '1', bb: '2' } } },
  { name: 'a data key is added', layout: { ...base, global: { a: '1', b: '2', d: '' } } },
  { name: 'a data key is removed', layout: { ...base, global: { a: '1' } } },
  { name: 'an override changes a value', layout: { ...base, cluster: { c: '3', a: 'x' } } },
  { name: 'type is set', layout: { ...base, clusterMeta: { type: 'Opaque' } } },
  { name: 'immutable is set', layout: { ...base, clusterMeta: { immutable: false } } },
];

test('hash: every variant differs from the base and from each other', () => {
  const seen = new Map<string, string>([[hashOf(base), 'base']]);
  for (const v of hashVariants) {
    const h = hashOf(v.layout);
    assert.ok(!seen.has(h), `${v.name}: same hash as ${seen.get(h)}`);
    seen.set(h, v.name);
  }
});

test('hash: key/value boundaries are unambiguous', () => {
  const h = (entries: [string, string][]) => hashObject(new Map(entries.map(([k, v]) => [k, Buffer.from(v)])), { labels: {}, annotations: {} });
  assert.notEqual(h([['a', 'bc']]), h([['ab', 'c']]));
  assert.notEqual(h([['a', '1:b:1:2']]), h([['a', '1'], ['b', '2']]));
  assert.notEqual(h([['k', '']]), h([]));
});

// ---------------------------------------------------------------- KeyStore

const P = (rel: string) => `${PREFIX}${rel}`;
const kvAt = (rel: string, value = 'v', modRevision = 1): Kv => ({ key: P(rel), value: Buffer.from(value), modRevision });
const sorted = (s: Set<string>) => [...s].sort();

test('KeyStore.reset: dirty = ids before ∪ ids after; the view is replaced', () => {
  const store = new KeyStore(PREFIX, 'a');
  const first = store.reset([kvAt('global/configmaps/ns/x/k'), kvAt('global/configmaps/ns/y/k')]);
  assert.deepEqual(sorted(first.dirty), ['configmaps/ns/x', 'configmaps/ns/y']);
  const second = store.reset([kvAt('global/configmaps/ns/y/k'), kvAt('clusters/a/secrets/ns/z/k')]);
  assert.deepEqual(sorted(second.dirty), ['configmaps/ns/x', 'configmaps/ns/y', 'secrets/ns/z']);
  assert.deepEqual([...store.objects.keys()].sort(), ['configmaps/ns/y', 'secrets/ns/z']);
  const third = store.reset([]);
  assert.deepEqual(sorted(third.dirty), ['configmaps/ns/y', 'secrets/ns/z']);
  assert.equal(store.objects.size, 0);
});

test('KeyStore: keys land in the right scope', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset(
    [kvAt('global/configmaps/ns/o/k', 'g'), kvAt('clusters/a/configmaps/ns/o/k', 'c'), kvAt('global/configmaps/ns/o/@meta', '{}'), kvAt('clusters/a/configmaps/ns/o/@meta', '{"immutable":true}')],
  );
  const o = store.objects.get('configmaps/ns/o')!;
  assert.equal(o.global.get('k')!.value.toString(), 'g');
  assert.equal(o.cluster.get('k')!.value.toString(), 'c');
  assert.equal(o.globalMeta!.value.toString(), '{}');
  assert.equal(o.clusterMeta!.value.toString(), '{"immutable":true}');
});

test('KeyStore.apply: put adds or replaces, delete removes, each marks its object dirty', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset([kvAt('global/configmaps/ns/o/a', '1', 1), kvAt('global/configmaps/ns/o/b', '2', 1)]);
  let r = store.apply([{ type: 'put', kv: kvAt('global/configmaps/ns/o/a', 'new', 2) }]);
  assert.deepEqual(sorted(r.dirty), ['configmaps/ns/o']);
  assert.equal(store.objects.get('configmaps/ns/o')!.global.get('a')!.value.toString(), 'new');
  r = store.apply([{ type: 'delete', key: P('global/configmaps/ns/o/b'), modRevision: 3 }]);
  assert.deepEqual(sorted(r.dirty), ['configmaps/ns/o']);
  assert.deepEqual([...store.objects.get('configmaps/ns/o')!.global.keys()], ['a']);
});

test('KeyStore.apply: deleting the last key removes the object', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset([kvAt('global/configmaps/ns/o/a'), kvAt('clusters/a/configmaps/ns/o/a')]);
  store.apply([{ type: 'delete', key: P('global/configmaps/ns/o/a'), modRevision: 2 }]);
  assert.ok(store.objects.has('configmaps/ns/o'), 'cluster key still there');
  const r = store.apply([{ type: 'delete', key: P('clusters/a/configmaps/ns/o/a'), modRevision: 3 }]);
  assert.deepEqual(sorted(r.dirty), ['configmaps/ns/o']);
  assert.equal(store.objects.has('configmaps/ns/o'), false);
});

test('KeyStore.apply: an @meta alone keeps the object; deleting it then removes it', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset([kvAt('global/secrets/ns/o/a'), kvAt('global/secrets/ns/o/@meta', '{}')]);
  store.apply([{ type: 'delete', key: P('global/secrets/ns/o/a'), modRevision: 2 }]);
  assert.ok(store.objects.has('secrets/ns/o'));
  store.apply([{ type: 'delete', key: P('global/secrets/ns/o/@meta'), modRevision: 3 }]);
  assert.equal(store.objects.has('secrets/ns/o'), false);
});

test('KeyStore.apply: changes in one batch apply in order; dirty lists each object once', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset([]);
  const r = store.apply(
    [
      { type: 'put', kv: kvAt('global/configmaps/ns/o/a', '1', 2) },
      { type: 'put', kv: kvAt('global/configmaps/ns/p/a', '1', 3) },
      { type: 'delete', key: P('global/configmaps/ns/o/a'), modRevision: 4 },
      { type: 'put', kv: kvAt('global/configmaps/ns/o/a', 'last', 5) },
    ],
  );
  assert.deepEqual(sorted(r.dirty), ['configmaps/ns/o', 'configmaps/ns/p']);
  assert.equal(store.objects.get('configmaps/ns/o')!.global.get('a')!.value.toString(), 'last');
});

test('KeyStore: invalid keys are reported with their path (relative, escaped) and skipped', () => {
  const store = new KeyStore(PREFIX, 'a');
  const { dirty, invalid } = store.reset(
    [kvAt('global/configmaps/Bad/o/k'), kvAt('global/configmaps/ns/o/..sneaky.txt'), kvAt('global/configmaps/ns/o/a\nb'), kvAt('global/configmaps/ns/o/good')],
  );
  assert.deepEqual(sorted(dirty), ['configmaps/ns/o']);
  assert.deepEqual([...store.objects.get('configmaps/ns/o')!.global.keys()], ['good']);
  assert.deepEqual(
    invalid.map((p) => p.path),
    ['global/configmaps/Bad/o/k', 'global/configmaps/ns/o/..sneaky.txt', 'global/configmaps/ns/o/a\\x0ab'],
  );
  assert.match(invalid[0]!.reason, /namespace "Bad"/);
  assert.match(invalid[1]!.reason, /start with "\.\."/);
  const r = store.apply([{ type: 'put', kv: kvAt('nope/x') }]);
  assert.deepEqual(r.invalid.map((p) => p.path), ['nope/x']);
  assert.deepEqual([...r.dirty], []);
});

test('KeyStore: recipients/, status/ and other clusters\' keys are ignored (not dirty, not invalid)', () => {
  const store = new KeyStore(PREFIX, 'a');
  const kvs = [kvAt('recipients/a', 'pubkey'), kvAt('status/a/node-1', '{}'), kvAt('clusters/b/configmaps/ns/o/k')];
  const r1 = store.reset(kvs);
  assert.deepEqual({ dirty: [...r1.dirty], invalid: r1.invalid, size: store.objects.size }, { dirty: [], invalid: [], size: 0 });
  const r2 = store.apply(
    [
      ...kvs.map((kv) => ({ type: 'put' as const, kv })),
      { type: 'delete' as const, key: P('recipients/a'), modRevision: 2 },
      { type: 'delete' as const, key: P('status/a/node-1'), modRevision: 2 },
      { type: 'delete' as const, key: P('clusters/b/configmaps/ns/o/k'), modRevision: 2 },
    ],
  );
  assert.deepEqual({ dirty: [...r2.dirty], invalid: r2.invalid, size: store.objects.size }, { dirty: [], invalid: [], size: 0 });
});

test('KeyStore: deleting a key it never held changes nothing', () => {
  const store = new KeyStore(PREFIX, 'a');
  store.reset([kvAt('global/configmaps/ns/o/a')]);
  const r = store.apply([{ type: 'delete', key: P('global/configmaps/ns/other/a'), modRevision: 2 }]);
  assert.deepEqual([...r.dirty], []);
  assert.deepEqual([...store.objects.keys()], ['configmaps/ns/o']);
});
