/**
 * The pure half of templates (src/render/template.ts): filters table-driven,
 * ranges, missing-key modes, what a render records as read, secrets denied or
 * masked, no host file reachable, bounded loops — all on desired objects built
 * in memory (the render is a pure function of them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyStore } from '../src/desired/store.js';
import type { DesiredObject } from '../src/desired/types.js';
import { objectId, type ObjectKind } from '../src/keyspace.js';
import { createEngine, FILTERS, MASK, parseTemplate, readsSecrets, renderTemplate, type MissingMode, type SecretsAccess } from '../src/render/template.js';

function obj(kind: ObjectKind, ref: string, data: Record<string, string>, labels: Record<string, string> = {}): DesiredObject {
  const [namespace, name] = ref.split('/') as [string, string];
  const map = new Map(Object.entries(data).map(([k, v]) => [k, Buffer.from(v)]));
  return { id: objectId(kind, namespace, name), kind, namespace, name, data: map, labels, annotations: {}, revision: 1, hash: ref };
}

const objects = new Map(
  [
    obj('configmaps', 'default/web-b', { host: '10.0.0.2', port: '8080' }, { tier: 'web' }),
    obj('configmaps', 'default/web-a', { host: '10.0.0.1', port: '8080' }, { tier: 'web' }),
    obj('configmaps', 'default/db', { host: 'db.internal' }),
    obj('configmaps', 'other/web-c', { host: '10.9.9.9' }),
    obj('secrets', 'default/db', { password: "s3cr'et \"pw\" $HOME" }),
  ].map((o) => [o.id, o]),
);

function render(source: string, opts: { missing?: MissingMode; secrets?: SecretsAccess; objs?: Map<string, DesiredObject> } = {}) {
  const engine = createEngine(opts.missing ?? 'error');
  const parsed = parseTemplate(engine, source);
  if ('error' in parsed) throw new Error(parsed.error);
  return renderTemplate(engine, parsed.parsed, { objects: opts.objs ?? objects, cluster: { name: 'eu', labels: { region: 'eu-west' } }, secrets: opts.secrets ?? 'allow' });
}

function out(source: string, opts: Parameters<typeof render>[1] = {}): string {
  const r = render(source, opts);
  assert.ok(r.ok, `render failed: ${!r.ok && r.error}`);
  return r.text;
}

const filterCases: { name: string; filter: string; input: unknown; args?: unknown[]; want: unknown }[] = [
  { name: 'base64 of text', filter: 'base64', input: 'hello', want: 'aGVsbG8=' },
  { name: 'base64 of nothing', filter: 'base64', input: undefined, want: '' },
  { name: 'base64_decode', filter: 'base64_decode', input: 'aGVsbG8=', want: 'hello' },
  { name: 'base64_decode unpadded, with a newline', filter: 'base64_decode', input: 'aGVs\nbG8', want: 'hello' },
  { name: 'env_quote plain', filter: 'env_quote', input: 'abc', want: '"abc"' },
  { name: 'env_quote escapes \\ " $ ` and newlines', filter: 'env_quote', input: 'a\\b"c$d`e\nf', want: '"a\\\\b\\"c\\$d\\`e\\nf"' },
  { name: 'sh_quote plain', filter: 'sh_quote', input: 'a b', want: "'a b'" },
  { name: "sh_quote a '", filter: 'sh_quote', input: "it's", want: "'it'\\''s'" },
  { name: 'sh_quote $ and ` stay literal', filter: 'sh_quote', input: '$(rm -rf /)`x`', want: "'$(rm -rf /)`x`'" },
  { name: 'yaml of a map', filter: 'yaml', input: { a: 1, b: ['x'] }, want: 'a: 1\nb:\n  - x\n' },
  { name: 'yaml of nothing', filter: 'yaml', input: undefined, want: 'null\n' },
  { name: 'match on a list of views', filter: 'match', input: [{ ref: 'a/x' }, { ref: 'b/x' }], args: ['a/*'], want: [{ ref: 'a/x' }] },
];

for (const c of filterCases) {
  test(`filter ${c.filter}: ${c.name}`, () => {
    assert.deepEqual(FILTERS[c.filter]!.call(undefined, c.input, ...(c.args ?? [])), c.want);
  });
}

const filterErrors: { name: string; filter: string; input: unknown; args?: unknown[]; want: RegExp }[] = [
  { name: 'base64_decode of text that is not base64', filter: 'base64_decode', input: 'not base64!', want: /base64_decode: the input is not base64$/ },
  { name: 'match without a glob', filter: 'match', input: [], args: [], want: /needs a glob/ },
  { name: 'match on a string', filter: 'match', input: 'x', args: ['*'], want: /use it on configmaps or secrets/ },
];
for (const c of filterErrors) {
  test(`filter ${c.filter} refuses: ${c.name} (the message holds no value)`, () => {
    assert.throws(() => FILTERS[c.filter]!.call(undefined, c.input, ...(c.args ?? [])), c.want);
  });
}

test('lookup by ref, cluster name and labels, Liquid filters chained with ours', () => {
  assert.equal(out('{{ configmaps["default/db"].keys.host }} {{ cluster.name }} {{ cluster.labels.region }}'), 'db.internal eu eu-west');
  assert.equal(out('{{ configmaps["default/db"].keys.host | upcase | base64 | base64_decode }}'), 'DB.INTERNAL');
  assert.equal(out('{{ configmaps["default/web-a"] | json }}'), '{"ref":"default/web-a","namespace":"default","name":"web-a","keys":{"host":"10.0.0.1","port":"8080"},"labels":{"tier":"web"},"annotations":{}}');
});

test('ranges: match sorts by ref and records its glob; a new matching object re-renders, others do not', () => {
  const r = render('{% assign webs = configmaps | match: "default/web-*" %}{% for w in webs %}server {{ w.keys.host }}:{{ w.keys.port }};{% endfor %}');
  assert.ok(r.ok);
  assert.equal(r.text, 'server 10.0.0.1:8080;server 10.0.0.2:8080;');
  assert.ok(r.deps.touches('configmaps/default/web-z'), 'a new web-* object');
  assert.ok(!r.deps.touches('configmaps/other/web-c'), 'another namespace');
  assert.ok(!r.deps.touches('configmaps/default/db'));
  assert.ok(!r.deps.touches('secrets/default/web-a'), 'same ref, other kind');
});

test('ranges: a glob matched in a loop is recorded once; past 256 distinct globs the whole kind counts as read', () => {
  const same = render('{% for i in (1..50) %}{% assign w = configmaps | match: "default/web-*" %}{% endfor %}');
  assert.ok(same.ok);
  assert.equal(same.deps.globs.length, 1);
  const many = render('{% for i in (1..300) %}{% assign g = "x" | append: i %}{% assign w = configmaps | match: g %}{% endfor %}');
  assert.ok(many.ok);
  assert.equal(many.deps.globs.length, 256);
  assert.ok(many.deps.touches('configmaps/any/thing'));
  assert.ok(!many.deps.touches('secrets/any/thing'));
});

test('ranges: iterating a whole kind records the kind; a lookup records the ref even when absent', () => {
  const all = render('{% for pair in configmaps %}{{ pair[0] }} {% endfor %}');
  assert.ok(all.ok);
  assert.equal(all.text, 'default/db default/web-a default/web-b other/web-c ');
  assert.ok(all.deps.touches('configmaps/anything/new'));
  assert.ok(!all.deps.touches('secrets/default/db'));
  const one = render('{% if configmaps["default/later"] %}yes{% else %}no{% endif %}');
  assert.ok(one.ok);
  assert.equal(one.text, 'no');
  assert.ok(one.deps.touches('configmaps/default/later'), 'appears later: re-render');
  assert.ok(!one.deps.touches('configmaps/default/db'));
});

test('missing modes: error and keep fail as "missing" naming the variable, empty renders ""; default: works in strict mode', () => {
  for (const missing of ['error', 'keep'] as const) {
    const r = render('x={{ configmaps["default/db"].keys.nope }}', { missing });
    assert.ok(!r.ok && r.missing, missing);
    assert.match(r.error, /undefined variable: configmaps\.default\/db\.keys\.nope/);
    const absent = render('{{ configmaps["default/gone"].keys.host }}', { missing });
    assert.ok(!absent.ok && absent.missing);
  }
  assert.equal(out('x={{ configmaps["default/db"].keys.nope }};', { missing: 'empty' }), 'x=;');
  assert.equal(out('{{ configmaps["default/gone"].keys.host | default: "127.0.0.1" }}'), '127.0.0.1');
});

test('secrets: readable when allowed, masked for `template render`, and a denied template fails by reading them at all', () => {
  assert.equal(out('{{ secrets["default/db"].keys.password | sh_quote }}'), `'s3cr'\\''et "pw" $HOME'`);
  assert.equal(out('{{ secrets["default/db"].keys.password }}', { secrets: 'mask' }), MASK);
  for (const source of ['{{ secrets["default/db"].keys.password }}', '{% for s in secrets %}{{ s }}{% endfor %}', '{% assign x = secrets | match: "*" %}{{ x }}']) {
    const r = render(source, { secrets: 'deny' });
    assert.ok(!r.ok && !r.missing, source);
    assert.match(r.error, /may not read secrets/);
  }
  const engine = createEngine('error');
  const uses = (s: string) => readsSecrets(engine, (parseTemplate(engine, s) as { parsed: never }).parsed);
  assert.equal(uses('{{ secrets["a/b"].keys.c }}'), true);
  assert.equal(uses('{% assign s = secrets | match: "x/*" %}'), true);
  assert.equal(uses('{{ configmaps["a/b"].keys.c }}'), false);
});

test('an error never holds a secret value, even when a filter fails on it', () => {
  const objs = new Map(objects);
  const s = obj('secrets', 'default/api', { token: 'tok-9f8e7d6c5b' });
  objs.set(s.id, s);
  // A lookup keyed by a secret value: liquidjs names the variable it missed, value included.
  const r = render('{{ configmaps[secrets["default/api"].keys.token].keys.x }}', { objs });
  assert.ok(!r.ok && r.missing);
  assert.equal(r.error, 'undefined variable: configmaps.***, line:1, col:4');
  const f = render('{{ secrets["default/api"].keys.token | base64_decode }}', { objs });
  assert.ok(!f.ok && !f.missing);
  assert.doesNotMatch(f.error, /tok-9f8e7d6c5b/);
  assert.equal(r.scrub('stderr: bad token tok-9f8e7d6c5b at line 1'), 'stderr: bad token *** at line 1');
});

test('no host file is reachable, and a runaway loop is stopped', () => {
  for (const source of ['{% include "/etc/passwd" %}', '{% render "/etc/hostname" %}', '{% layout "/etc/passwd" %}x']) {
    const r = render(source);
    assert.ok(!r.ok, source);
    assert.doesNotMatch(r.error, /root:/);
  }
  const loop = render('{% for i in (1..100000000) %}{{ i }}{% endfor %}');
  assert.ok(!loop.ok);
  assert.match(loop.error, /limit exceeded/);
});

test('output and what a render builds are bounded: a big value printed in a loop, a capture doubling itself, a filter in a loop', () => {
  const big = new Map(objects);
  const o = obj('configmaps', 'default/big', { v: 'x'.repeat(1024 * 1024) });
  big.set(o.id, o);
  const cases = [
    { source: '{% for i in (1..100) %}{{ configmaps["default/big"].keys.v }}{% endfor %}', want: /^output is larger than 8388608 bytes/ },
    { source: '{% assign x = "ab" %}{% for i in (1..40) %}{% capture x %}{{ x }}{{ x }}{% endcapture %}{% endfor %}{{ x | size }}', want: /memory alloc limit exceeded/ },
    { source: '{% for i in (1..100) %}{% assign y = configmaps["default/big"].keys.v | base64 %}{% endfor %}', want: /memory alloc limit exceeded/ },
  ];
  for (const c of cases) {
    const r = render(c.source, { objs: big });
    assert.ok(!r.ok, c.source);
    assert.match(r.error, c.want, c.source);
  }
  assert.equal(out('{% capture x %}a{{ "b" }}{% endcapture %}{{ x }}{{ x | size }}'), 'ab2', 'capture still works');
});

test('KeyStore: a template key is not an object; the cluster scope wins over global, another cluster is never read, a delete falls back', () => {
  const store = new KeyStore('/p/', 'eu');
  const kv = (key: string, value: string, modRevision: number) => ({ key: `/p/${key}`, value: Buffer.from(value), modRevision });
  const { invalid } = store.reset([kv('global/templates/web', 'global', 2), kv('clusters/us/templates/web', 'us', 3)]);
  assert.deepEqual(invalid, []);
  assert.equal(store.objects.size, 0);
  assert.equal(store.template('web')?.value.toString(), 'global');
  const put = store.apply([{ type: 'put', kv: kv('clusters/eu/templates/web', 'eu', 4) }]);
  assert.equal(put.templates, true);
  assert.equal(put.dirty.size, 0);
  assert.equal(store.template('web')?.value.toString(), 'eu');
  assert.equal(store.template('web')?.path, 'clusters/eu/templates/web');
  store.apply([{ type: 'delete', key: '/p/clusters/eu/templates/web', modRevision: 5 }]);
  assert.equal(store.template('web')?.value.toString(), 'global');
  assert.equal(store.apply([{ type: 'put', kv: kv('global/configmaps/default/a/k', 'v', 6) }]).templates, false);
  assert.equal(store.apply([{ type: 'put', kv: kv('clusters/us/templates/web', 'us2', 7) }]).templates, false);
});
