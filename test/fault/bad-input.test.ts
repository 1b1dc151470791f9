/**
 * Bad input through the REAL daemon (one etcd, one daemon with an identity, the
 * whole corpus in one go) and bad config files through `confsync run --config`.
 *
 * Every daemon case: reported by a log line carrying its path, never fatal (the
 * daemon stays up and keeps applying), nothing written outside the files root
 * (the daemon's dir sits three levels below a scratch dir that is walked, so a
 * `../../..` escape would land where it is seen), and the last good state kept
 * (a good value is seeded first wherever the case has an object to spoil).
 * Valid-but-odd inputs ride along as controls that must be applied exactly, so
 * a validator that refuses too much fails here too.
 *
 * Every config case: exit code 2, exactly one line on stderr naming the field
 * (or the YAML position / the file), no stack trace, nothing on stdout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { seal } from '../../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../../src/envelope/identity.js';
import { DaemonProcess, MAIN, until } from '../harness/daemon.js';
import { startEtcd } from '../harness/etcd.js';
import { commit } from './etcd-cluster.js';
import { walk } from '../harness/walk.js';
import { printable } from '../../src/keyspace.js';

const P = '/confsync';
const K = 'global/configmaps/default/app/';

/** How a path appears in a log line: control and bidi characters escaped (keyspace's printable), then JSON string escaping. */
const shown = (p: string) => JSON.stringify(printable(p)).slice(1, -1);

// ------------------------------------------------------------------ the corpus

/** Keys (relative to the prefix) that are not part of the layout: reported by path, never written. */
const BAD_KEYS: { cls: string; key: string | Buffer; why: string }[] = [
  { cls: 'traversal', key: 'global/configmaps/default/../../../etc/passwd', why: '.. segments, extra segments' },
  { cls: 'traversal', key: 'global/configmaps/../../etc/k', why: 'namespace ..' },
  { cls: 'traversal', key: 'global/secrets/default/../../x/k', why: 'name .. in secrets' },
  { cls: 'traversal', key: `${K}..%2f..%2fetc%2fpasswd`, why: 'encoded separators' },
  { cls: 'traversal', key: `${K}%2e%2e`, why: 'encoded ..' },
  { cls: 'traversal', key: `${K}back\\slash`, why: 'backslash' },
  { cls: '.. prefix', key: `${K}..`, why: 'key ..' },
  { cls: '.. prefix', key: `${K}.`, why: 'key .' },
  { cls: '.. prefix', key: `${K}..data`, why: 'the swap link' },
  { cls: '.. prefix', key: `${K}..data_tmp`, why: 'the temp swap link' },
  { cls: '.. prefix', key: `${K}..sneaky.txt`, why: 'reserved prefix' },
  { cls: '.. prefix', key: `${K}..2024_01_01_00_00_00_000.AbCdEf`, why: 'a payload dir name' },
  { cls: '.. prefix', key: 'clusters/eu/configmaps/default/app/..sneaky', why: 'reserved prefix, cluster scope' },
  { cls: 'NUL / control', key: `${K}nul\u0000byte`, why: 'NUL' },
  { cls: 'NUL / control', key: `${K}\u0000`, why: 'NUL only' },
  { cls: 'NUL / control', key: `${K}line\nfeed`, why: 'newline' },
  { cls: 'NUL / control', key: `${K}\u001b[31mred`, why: 'escape sequence' },
  { cls: 'NUL / control', key: `${K}tab\tkey`, why: 'tab' },
  { cls: 'NUL / control', key: `${K}del\u007f`, why: 'DEL' },
  { cls: 'NUL / control', key: 'global/configmaps/default/a\rb/k', why: 'CR in a name' },
  { cls: 'overlong', key: `${K}${'k'.repeat(254)}`, why: 'key of 254' },
  { cls: 'overlong', key: `global/configmaps/${'n'.repeat(64)}/app/k`, why: 'namespace of 64' },
  { cls: 'overlong', key: `global/configmaps/default/${'a'.repeat(254)}/k`, why: 'name of 254' },
  { cls: 'overlong', key: `${K}${'x'.repeat(4000)}`, why: 'key of 4000' },
  { cls: 'namespace', key: 'global/configmaps/Default/app/k', why: 'uppercase' },
  { cls: 'namespace', key: 'global/configmaps/my.ns/app/k', why: 'dot (a label, not a subdomain)' },
  { cls: 'namespace', key: 'global/configmaps/my_ns/app/k', why: 'underscore' },
  { cls: 'namespace', key: 'global/configmaps/-ns/app/k', why: 'leading dash' },
  { cls: 'namespace', key: 'clusters/eu/secrets/KUBE-SYSTEM/app/k', why: 'uppercase, cluster scope' },
  { cls: 'kind', key: 'global/configmap/default/app/k', why: 'singular' },
  { cls: 'kind', key: 'global/Secrets/default/app/k', why: 'capitalised' },
  { cls: 'kind', key: 'global/pods/default/app/k', why: 'another resource' },
  { cls: 'kind', key: 'clusters/eu/widgets/default/app/k', why: 'unknown kind, cluster scope' },
  { cls: 'segments', key: `${K}k/extra`, why: 'extra segment' },
  { cls: 'segments', key: `${K}@meta/x`, why: 'below @meta' },
  { cls: 'segments', key: 'global/configmaps/default/app', why: 'no key' },
  { cls: 'segments', key: 'global/configmaps', why: 'kind only' },
  { cls: 'empty segment', key: 'global//default/app/k', why: 'empty kind' },
  { cls: 'empty segment', key: 'global/configmaps//app/k', why: 'empty namespace' },
  { cls: 'empty segment', key: 'global/configmaps/default//k', why: 'empty name' },
  { cls: 'empty segment', key: K, why: 'empty key (trailing slash)' },
  { cls: 'empty segment', key: `${K}/k`, why: 'empty key then extra' },
  { cls: 'unicode', key: `${K}ключ`, why: 'Cyrillic key' },
  { cls: 'unicode', key: 'global/configmaps/naïve/app/k', why: 'accented namespace' },
  { cls: 'unicode', key: `${K}ｋ`, why: 'full-width k' },
  { cls: 'unicode', key: `${K}bidi\u202etxt.exe`, why: 'right-to-left override in a key' },
  { cls: 'unicode', key: 'global/configmaps/default/app\u2066x/k', why: 'bidi isolate in a name' },
  { cls: 'unicode', key: 'global/configmaps/ns\u200d/app/k', why: 'zero-width joiner in a namespace' },
  { cls: 'NUL / control', key: `${K}c1\u0085nel`, why: 'C1 control (NEL)' },
  { cls: 'NUL / control', key: `${K}\u009b31mcsi`, why: 'C1 CSI' },
  { cls: 'NUL / control', key: 'global/configmaps/default/e\u001b]0;pwned\u0007/k', why: 'OSC title sequence in a name' },
  { cls: 'unicode', key: Buffer.concat([Buffer.from(`${P}/${K}bad`), Buffer.from([0xff, 0xfe])]), why: 'invalid UTF-8 bytes' },
  { cls: 'charset', key: `${K}with space`, why: 'space' },
  { cls: 'charset', key: `${K}@other`, why: '@ other than @meta' },
  { cls: 'charset', key: `${K}a:b`, why: 'colon' },
  { cls: 'name', key: 'global/configmaps/default/App/k', why: 'uppercase' },
  { cls: 'name', key: 'global/configmaps/default/my_app/k', why: 'underscore' },
  { cls: 'name', key: 'global/configmaps/default/-app/k', why: 'leading dash' },
  { cls: 'name', key: 'global/configmaps/default/app-/k', why: 'trailing dash' },
  { cls: 'name', key: 'global/configmaps/default/a..b/k', why: 'empty label' },
  { cls: 'name', key: 'global/configmaps/default/app./k', why: 'trailing dot' },
  { cls: 'name', key: 'global/configmaps/default/.app/k', why: 'leading dot' },
  { cls: 'name', key: 'global/configmaps/default/../k', why: 'name ..' },
  { cls: 'name', key: 'global/configmaps/default/with space/k', why: 'space' },
  { cls: 'name', key: 'global/configmaps/default/приложение/k', why: 'Cyrillic' },
  { cls: 'name', key: 'global/secrets/default/Bad/k', why: 'uppercase, secrets' },
];

/** Bad @meta values: the object (seeded `k=good`) is held at its last good state when `k` changes with it. */
const BAD_META: { why: string; value: string | Buffer; scope?: 'cluster' }[] = [
  { why: 'invalid JSON', value: '{not json' },
  { why: 'truncated JSON', value: '{"labels": {"a": "b"' },
  { why: 'empty value', value: '' },
  { why: 'BOM before the JSON', value: '\ufeff{}' },
  { why: 'invalid UTF-8', value: Buffer.from([0x7b, 0xff, 0x7d]) },
  { why: 'array', value: '[]' },
  { why: 'string', value: '"labels"' },
  { why: 'null', value: 'null' },
  { why: 'number', value: '42' },
  { why: 'unknown field', value: '{"lables":{"a":"b"}}' },
  { why: 'labels a string', value: '{"labels":"team=web"}' },
  { why: 'labels non-string value', value: '{"labels":{"replicas":3}}' },
  { why: 'annotations non-string value', value: '{"annotations":{"a":true}}' },
  { why: 'duplicate field, last one wrong', value: '{"labels":{"a":"1"},"labels":5}' },
  { why: 'placement.clusters a string', value: '{"placement":{"clusters":"eu"}}' },
  { why: 'placement.clusters numbers', value: '{"placement":{"clusters":[1,2]}}' },
  { why: 'placement.clusterSelector.matchLabels non-string', value: '{"placement":{"clusterSelector":{"matchLabels":{"region":["eu"]}}}}' },
  { why: 'placement unknown field', value: '{"placement":{"regions":["eu"]}}' },
  { why: 'immutable a string', value: '{"immutable":"yes"}' },
  { why: 'type empty', value: '{"type":""}' },
  { why: 'cluster-scope @meta invalid JSON', value: '{bad', scope: 'cluster' },
  { why: 'pathological glob: 8,000 stars', value: JSON.stringify({ placement: { clusters: [`${'*'.repeat(8000)}X`] } }) },
  { why: 'too many placement globs', value: JSON.stringify({ placement: { clusters: Array.from({ length: 300 }, (_, i) => `c${i}-*`) } }) },
  { why: 'selector value longer than a label value', value: JSON.stringify({ placement: { clusterSelector: { matchLabels: { region: 'e'.repeat(64) } } } }) },
  { why: 'too many labels', value: JSON.stringify({ labels: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`l${i}`, 'v'])) }) },
  { why: 'huge @meta (600 KiB)', value: JSON.stringify({ annotations: { a: 'x'.repeat(600 * 1024) } }) },
];

/** Objects over the daemon's per-object limits (limits.maxObjectKeys = 100 in this test), added in one transaction: held at their last good state. */
const OVER_LIMIT_KEYS = 100;

/** Valid but unusual: must be applied exactly (controls against an over-strict validator). */
const CONTROLS: { cls: string; why: string; key: string; value: Buffer }[] = [
  { cls: 'value', why: 'huge (1.4 MiB, under etcd\'s 1.5 MiB request limit)', key: 'global/configmaps/default/val-huge/k', value: Buffer.alloc(1.4 * 1024 * 1024, 'z') },
  { cls: 'value', why: 'every byte value', key: 'global/configmaps/default/val-binary/k', value: Buffer.from(Array.from({ length: 256 }, (_, i) => i)) },
  { cls: 'value', why: 'empty', key: 'global/configmaps/default/val-empty/k', value: Buffer.alloc(0) },
  { cls: 'value', why: 'invalid UTF-8', key: 'global/configmaps/default/val-latin1/k', value: Buffer.from([0xc3, 0x28, 0xa0, 0xa1]) },
  { cls: 'value', why: 'NULs', key: 'global/configmaps/default/val-nul/k', value: Buffer.alloc(4096) },
  { cls: 'value', why: 'looks like an envelope, but a configmap', key: 'global/configmaps/default/val-env/k', value: Buffer.from('confsync:v1:AAAA') },
  { cls: 'value', why: 'CRLF and trailing blanks', key: 'global/configmaps/default/val-crlf/k', value: Buffer.from('a = 1\r\nb = 2  \r\n\t\n') },
  { cls: 'valid edge', why: 'dotfile key', key: 'global/configmaps/default/edge/.dotfile', value: Buffer.from('1') },
  { cls: 'valid edge', why: 'key with ..', key: 'global/configmaps/default/edge/a..b', value: Buffer.from('2') },
  { cls: 'valid edge', why: 'key -', key: 'global/configmaps/default/edge/-', value: Buffer.from('3') },
  { cls: 'valid edge', why: 'key _', key: 'global/configmaps/default/edge/_', value: Buffer.from('4') },
  { cls: 'valid edge', why: 'dotted name', key: 'global/configmaps/default/my.app.v2/k', value: Buffer.from('5') },
  { cls: 'valid edge', why: 'namespace 63, name 253, key 253', key: `global/configmaps/${'n'.repeat(63)}/${'a'.repeat(253)}/${'k'.repeat(253)}`, value: Buffer.from('6') },
];

type Bad = (good: string, at: string) => Promise<string | Buffer>;
/** Envelopes under secrets/: each replaces a good sealed value; the reason the daemon must give. */
function envelopeCases(sealFor: (plain: string, at: string, to?: 'eu' | 'us') => Promise<string>): { why: string; reason: string; bad: Bad; scope?: 'cluster' }[] {
  const body = (env: string) => Buffer.from(env.slice('confsync:v2:'.length), 'base64url');
  const rebuild = (b: Buffer) => `confsync:v2:${b.toString('base64url')}`;
  const S = 8; // the sealed version before the recipient count
  return [
    { why: 'plaintext', reason: 'not-an-envelope', bad: async () => 'hunter2-plaintext' },
    { why: 'empty', reason: 'not-an-envelope', bad: async () => '' },
    { why: 'truncated to half', reason: 'corrupt', bad: async (g, at) => (await sealFor(g, at)).slice(0, 100) },
    { why: 'truncated to the prefix', reason: 'corrupt', bad: async () => 'confsync:v2:' },
    { why: 'wrong magic', reason: 'not-an-envelope', bad: async (g, at) => 'k' + (await sealFor(g, at)).slice(1) },
    { why: 'upper-case magic', reason: 'not-an-envelope', bad: async (g, at) => 'CONFSYNC' + (await sealFor(g, at)).slice(8) },
    { why: 'wrong version (v3)', reason: 'unsupported-version', bad: async (g, at) => (await sealFor(g, at)).replace('confsync:v2:', 'confsync:v3:') },
    { why: 'malformed version', reason: 'corrupt', bad: async (g, at) => (await sealFor(g, at)).replace('confsync:v2:', 'confsync:vX:') },
    { why: 'v2 body labelled v1', reason: 'corrupt', bad: async (g, at) => (await sealFor(g, at)).replace('confsync:v2:', 'confsync:v1:') },
    { why: 'sealed version changed', reason: 'corrupt', bad: async (g, at) => { const b = body(await sealFor(g, at)); b[S - 4]! ^= 0x01; return rebuild(b); } },
    { why: 'one base64 character changed', reason: 'corrupt', bad: async (g, at) => { const e = await sealFor(g, at); const i = e.length >> 1; return e.slice(0, i) + (e[i] === 'A' ? 'B' : 'A') + e.slice(i + 1); } },
    { why: 'one ciphertext bit flipped', reason: 'corrupt', bad: async (g, at) => { const b = body(await sealFor(g, at)); b[b.length - 20]! ^= 0x01; return rebuild(b); } },
    { why: 'one nonce bit flipped', reason: 'corrupt', bad: async (g, at) => { const b = body(await sealFor(g, at)); b[S + 1 + 88 + 3]! ^= 0x80; return rebuild(b); } },
    { why: 'copied from another path', reason: 'corrupt', bad: async (g) => sealFor(g, 'global/secrets/default/elsewhere/k') },
    { why: 'moved from the cluster scope', reason: 'corrupt', bad: async (g, at) => sealFor(g, at.replace('global/', 'clusters/eu/')) },
    { why: 'sealed to another identity', reason: 'not-a-recipient', bad: async (g, at) => sealFor(g, at, 'us') },
    { why: 'base64 garbage', reason: 'corrupt', bad: async () => 'confsync:v2:!!!not*base64###' },
    { why: 'padding added', reason: 'corrupt', bad: async (g, at) => (await sealFor(g, at)) + '==' },
    { why: 'leading space', reason: 'not-an-envelope', bad: async (g, at) => ' ' + (await sealFor(g, at)) },
    { why: 'zero recipients', reason: 'corrupt', bad: async (g, at) => { const b = body(await sealFor(g, at)); b[S] = 0; return rebuild(b); } },
    { why: 'more recipients than the body holds', reason: 'corrupt', bad: async (g, at) => { const b = body(await sealFor(g, at)); b[S] = 200; return rebuild(b); } },
    { why: 'cluster override is plaintext', reason: 'not-an-envelope', bad: async () => 'override-plaintext', scope: 'cluster' },
  ];
}

/** Config files for `confsync run --config`; `field` must appear in the one stderr line. */
const GOOD = { cluster: 'eu', etcd: 'etcd: {endpoints: ["http://127.0.0.1:9"]}', files: 'sinks: {files: {root: ROOT}}' };
const CONFIGS: { why: string; yaml: string | null; field: string | RegExp }[] = [
  { why: 'unknown top-level field', yaml: `cluster: eu\nclustr: eu\n${GOOD.etcd}\n${GOOD.files}`, field: 'unknown field clustr' },
  { why: 'unknown nested field', yaml: `cluster: eu\netcd: {endpoint: "http://127.0.0.1:9"}\n${GOOD.files}`, field: 'unknown field etcd.endpoint' },
  { why: 'unknown field in sinks.files', yaml: `cluster: eu\n${GOOD.etcd}\nsinks: {files: {root: ROOT, mode: "0644"}}`, field: 'unknown field sinks.files.mode' },
  { why: 'wrong type: number', yaml: `cluster: eu\n${GOOD.etcd}\n${GOOD.files}\nresyncSeconds: soon`, field: 'field resyncSeconds' },
  { why: 'wrong type: list', yaml: `cluster: eu\netcd: {endpoints: "http://127.0.0.1:9"}\n${GOOD.files}`, field: 'field etcd.endpoints' },
  { why: 'wrong type: boolean', yaml: `cluster: eu\n${GOOD.etcd}\nsinks: {files: {root: ROOT}, kubernetes: {enabled: "yes"}}`, field: 'field sinks.kubernetes.enabled' },
  { why: 'wrong type: labels value', yaml: `cluster: eu\nlabels: {tier: 1}\n${GOOD.etcd}\n${GOOD.files}`, field: 'field labels.tier' },
  { why: 'bad endpoint URL', yaml: `cluster: eu\netcd: {endpoints: ["not a url"]}\n${GOOD.files}`, field: 'field etcd.endpoints[0]' },
  { why: 'bad endpoint scheme', yaml: `cluster: eu\netcd: {endpoints: ["ftp://127.0.0.1:2379"]}\n${GOOD.files}`, field: 'field etcd.endpoints[0]' },
  { why: 'bad mode: bare number', yaml: `cluster: eu\n${GOOD.etcd}\nsinks: {files: {root: ROOT, configFileMode: 644}}`, field: 'field sinks.files.configFileMode' },
  { why: 'bad mode: not octal', yaml: `cluster: eu\n${GOOD.etcd}\nsinks: {files: {root: ROOT, secretFileMode: "0999"}}`, field: 'field sinks.files.secretFileMode' },
  { why: 'negative uid', yaml: `cluster: eu\n${GOOD.etcd}\nsinks: {files: {root: ROOT, uid: -1}}`, field: 'field sinks.files.uid' },
  { why: 'missing cluster', yaml: `${GOOD.etcd}\n${GOOD.files}`, field: 'field cluster' },
  { why: 'cluster not a DNS label', yaml: `cluster: Prod_EU\n${GOOD.etcd}\n${GOOD.files}`, field: 'field cluster' },
  { why: 'unset ${VAR}', yaml: `cluster: eu\nnode: \${CONFSYNC_FAULT_TEST_UNSET}\n${GOOD.etcd}\n${GOOD.files}`, field: 'field node: environment variable CONFSYNC_FAULT_TEST_UNSET is not set' },
  { why: 'bad prefix', yaml: `cluster: eu\netcd: {endpoints: ["http://127.0.0.1:9"], prefix: "confsync/"}\n${GOOD.files}`, field: 'field etcd.prefix' },
  { why: 'bad log level', yaml: `cluster: eu\n${GOOD.etcd}\n${GOOD.files}\nlog: {level: loud}`, field: 'field log.level' },
  { why: 'hook with command and signal', yaml: `cluster: eu\n${GOOD.etcd}\n${GOOD.files}\nhooks: [{objects: ["configmaps/*/*"], command: ["true"], signal: {pidFile: /run/x.pid}}]`, field: 'field hooks[0]' },
  { why: 'bad metrics.listen', yaml: `cluster: eu\n${GOOD.etcd}\n${GOOD.files}\nmetrics: {listen: "9464"}`, field: 'field metrics.listen' },
  { why: 'YAML syntax error', yaml: `cluster: eu\netcd: [unclosed\n${GOOD.files}`, field: /not valid YAML: .*line \d+/ },
  { why: 'YAML duplicate key', yaml: `cluster: eu\ncluster: us\n${GOOD.etcd}`, field: /not valid YAML: .*unique/ },
  { why: 'not a mapping: a list', yaml: '- cluster: eu\n', field: 'field (top level)' },
  { why: 'not a mapping: a scalar', yaml: 'just a string\n', field: 'field (top level)' },
  { why: 'empty file', yaml: '', field: 'field cluster' },
  { why: 'no such file', yaml: null, field: /nope\.yaml: cannot read config file \(ENOENT\)/ },
];

// ------------------------------------------------------------------ daemon cases

test(`bad-input corpus through the running daemon: each reported by path, none fatal, nothing outside the root, last good state kept`, async (t) => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-bad-'));
  const daemonDir = path.join(scratch, 'a', 'b', 'c');
  fs.mkdirSync(daemonDir, { recursive: true });
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-bad-key-'));
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const eu = generateIdentity();
  const us = generateIdentity();
  const idFile = path.join(keyDir, 'eu.key');
  await writeIdentityFile(idFile, eu);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, limits: { maxObjectKeys: 100 } }, daemonDir);
  const sealFor = (plain: string, at: string, to: 'eu' | 'us' = 'eu') => seal(Buffer.from(plain), at, [recipientOf((to === 'eu' ? eu : us).publicKey)]);
  const put = (k: string | Buffer, v: string | Buffer) => etcdc.put(Buffer.isBuffer(k) ? k : `${P}/${k}`).value(v);
  const file = (rel: string) => path.join(d.root, rel);
  const read = (rel: string) => (fs.existsSync(file(rel)) ? fs.readFileSync(file(rel)) : undefined);
  const envelopes = envelopeCases(sealFor);
  const plaintexts: string[] = ['hunter2-plaintext', 'override-plaintext'];
  try {
    // Seed the good state every case will try to spoil.
    await put(`${K}k`, 'good');
    await put('global/configmaps/default/huge-keys/k', 'good');
    for (let i = 0; i < BAD_META.length; i++) await put(`global/configmaps/default/meta-${i}/k`, 'good');
    for (let i = 0; i < envelopes.length; i++) {
      const at = `global/secrets/default/sec-${i}/k`;
      plaintexts.push(`pw-good-${i}-7c1e`);
      await put(at, await sealFor(`pw-good-${i}-7c1e`, at));
    }
    d.start();
    await d.ready();
    await until(() => read(`configmaps/default/meta-${BAD_META.length - 1}/k`)?.toString() === 'good' && read(`secrets/default/sec-${envelopes.length - 1}/k`), 'good state projected');
    const before = fs.readlinkSync(file('configmaps/default/app/..data'));

    // The corpus.
    for (const c of BAD_KEYS) await put(c.key, 'evil');
    for (const [i, c] of BAD_META.entries()) {
      const scope = c.scope === 'cluster' ? 'clusters/eu' : 'global';
      // @meta and a change of k in one transaction: the object must hold at k=good.
      await commit(etcdc, [[`${P}/${scope}/configmaps/default/meta-${i}/@meta`, c.value], [`${P}/global/configmaps/default/meta-${i}/k`, 'changed']]);
    }
    for (const [i, c] of envelopes.entries()) {
      const at = `${c.scope === 'cluster' ? 'clusters/eu' : 'global'}/secrets/default/sec-${i}/k`;
      await put(at, await c.bad(`pw-bad-${i}-e9a0`, at));
      plaintexts.push(`pw-bad-${i}-e9a0`);
    }
    for (const c of CONTROLS) await put(c.key, c.value);
    await commit(etcdc, Array.from({ length: OVER_LIMIT_KEYS }, (_, i) => [`${P}/global/configmaps/default/huge-keys/x${i}`, 'more']));
    const nl = 'global/secrets/default/sec-newline/k';
    await put(nl, (await sealFor('pw-newline-51d2', nl)) + '\n');
    plaintexts.push('pw-newline-51d2');

    // Reported, each by its path.
    const keyPath = (k: string | Buffer) => (Buffer.isBuffer(k) ? k.toString('utf8').slice(P.length + 1) : k);
    const expectations = [
      ...BAD_KEYS.map((c) => ({ what: `key ${c.cls}: ${c.why}`, needle: `"path":"${shown(keyPath(c.key))}"` })),
      ...BAD_META.map((c, i) => ({ what: `@meta: ${c.why}`, needle: `"path":"${c.scope === 'cluster' ? 'clusters/eu' : 'global'}/configmaps/default/meta-${i}/@meta","reason":"@meta ` })),
      ...envelopes.map((c, i) => ({
        what: `envelope: ${c.why}`,
        needle: `"path":"${c.scope === 'cluster' ? 'clusters/eu' : 'global'}/secrets/default/sec-${i}/k","reason":"envelope cannot be opened (${c.reason})"`,
      })),
      { what: 'object over limits.maxObjectKeys', needle: `"path":"configmaps/default/huge-keys","reason":"object has ${OVER_LIMIT_KEYS + 1} keys, over limits.maxObjectKeys (100)` },
    ];
    await until(() => expectations.every((e) => d.log.includes(e.needle)) && CONTROLS.every((c) => read(c.key.replace(/^global\//, ''))?.equals(c.value)) && read('secrets/default/sec-newline/k'), 'every case reported and every control applied', 30_000).catch((err) => {
      const missing = expectations.filter((e) => !d.log.includes(e.needle)).map((e) => e.what);
      const notApplied = CONTROLS.filter((c) => !read(c.key.replace(/^global\//, ''))?.equals(c.value)).map((c) => c.why);
      throw new Error(`${(err as Error).message}; not reported: ${JSON.stringify(missing)}; not applied: ${JSON.stringify(notApplied)}`);
    });

    // Never fatal, and still working after all of it.
    assert.ok(d.running, 'daemon alive');
    await put(`${K}k`, 'good-2');
    await until(() => read('configmaps/default/app/k')?.toString() === 'good-2', 'a later put still applies');
    assert.notEqual(fs.readlinkSync(file('configmaps/default/app/..data')), before);

    // Last good state kept.
    for (let i = 0; i < BAD_META.length; i++) assert.equal(read(`configmaps/default/meta-${i}/k`)?.toString(), 'good', `meta-${i}: ${BAD_META[i]!.why}`);
    for (let i = 0; i < envelopes.length; i++) assert.equal(read(`secrets/default/sec-${i}/k`)?.toString(), `pw-good-${i}-7c1e`, `sec-${i}: ${envelopes[i]!.why}`);
    assert.equal(read('secrets/default/sec-newline/k')?.toString(), 'pw-newline-51d2', 'a trailing newline after an envelope is fine');
    assert.deepEqual(fs.readdirSync(file('configmaps/default/app')).filter((e) => !e.startsWith('..')), ['k'], 'no bad key became a file');
    assert.deepEqual(fs.readdirSync(file('configmaps/default/huge-keys')).filter((e) => !e.startsWith('..')), ['k'], 'an object over the key limit keeps its last good state');

    // Nothing outside the root; inside it only the objects we meant.
    // The daemon's own stateDir (replay high-water marks) is the one place outside the root it may write.
    const state = path.join(d.dir, 'state');
    const outside = walk(scratch).filter((p) => !(p + '/').startsWith(d.root + '/') && !(p + '/').startsWith(state + '/') && p !== d.configFile && !(d.root + '/').startsWith(p + '/'));
    assert.deepEqual(outside, [], 'nothing written outside the root');
    const objects = walk(d.root).filter((p) => !p.includes('/..')).map((p) => path.relative(d.root, p)).filter((p) => p.split('/').length === 3).sort();
    const want = [
      'configmaps/default/app', 'configmaps/default/edge', 'configmaps/default/my.app.v2',
      `configmaps/${'n'.repeat(63)}/${'a'.repeat(253)}`,
      ...BAD_META.map((_, i) => `configmaps/default/meta-${i}`),
      'configmaps/default/huge-keys',
      ...CONTROLS.filter((c) => c.cls === 'value').map((c) => `configmaps/default/${c.key.split('/')[3]}`),
      ...envelopes.map((_, i) => `secrets/default/sec-${i}`),
      'secrets/default/sec-newline',
    ].sort();
    assert.deepEqual(objects, want);

    // Reported by path, never with a value: no plaintext in the log.
    assert.deepEqual(plaintexts.filter((p) => d.log.includes(p)), [], 'no plaintext in the log');
    assert.ok(!d.log.includes('evil'));

    const byClass = new Map<string, number>();
    const count = (cls: string) => byClass.set(cls, (byClass.get(cls) ?? 0) + 1);
    for (const c of BAD_KEYS) count(`key/name: ${c.cls}`);
    for (const _ of BAD_META) count('@meta');
    for (const _ of envelopes) count('envelope under secrets/');
    for (const c of CONTROLS) count(`applied control: ${c.cls}`);
    count('applied control: envelope + trailing newline');
    const total = BAD_KEYS.length + BAD_META.length + envelopes.length;
    t.diagnostic(`daemon corpus: ${total} bad inputs reported and held, ${CONTROLS.length + 1} valid-but-odd controls applied exactly`);
    t.diagnostic([...byClass].map(([c, n]) => `${c} ${n}`).join('; '));
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.rmSync(keyDir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------ config cases

function runWithConfig(file: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN, 'run', '--config', file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => (stdout += b));
    p.stderr.on('data', (b) => (stderr += b));
    // A config that is accepted starts the daemon: that is a failure here, not a hang.
    const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test(`bad config files: confsync run --config exits 2 with one line naming the field, no stack trace (${CONFIGS.length} cases)`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-badcfg-'));
  const env = { ...process.env };
  delete env.CONFSYNC_FAULT_TEST_UNSET;
  delete env.CONFSYNC_DEBUG;
  try {
    const results: { why: string; problem?: string; line: string }[] = [];
    // Two at a time: each is a node start (~0.5 s of CPU).
    for (let i = 0; i < CONFIGS.length; i += 2) {
      await Promise.all(
        CONFIGS.slice(i, i + 2).map(async (c, j) => {
          const file = path.join(dir, c.yaml === null ? 'nope.yaml' : `case-${i + j}.yaml`);
          if (c.yaml !== null) fs.writeFileSync(file, c.yaml.replace('ROOT', path.join(dir, 'root')));
          const r = await runWithConfig(file, env);
          const lines = r.stderr.split('\n').filter((l, k, all) => l !== '' || k < all.length - 1);
          const problems = [
            r.code !== 2 && `exit ${r.code}`,
            lines.length !== 1 && `${lines.length} stderr lines`,
            !(typeof c.field === 'string' ? r.stderr.includes(c.field) : c.field.test(r.stderr)) && `stderr does not name ${c.field}`,
            /^\s+at /m.test(r.stderr) && 'stack trace',
            r.stdout !== '' && 'output on stdout',
          ].filter(Boolean);
          results.push({ why: c.why, problem: problems.length ? problems.join(', ') : undefined, line: r.stderr.trim() });
        }),
      );
    }
    for (const r of results) t.diagnostic(`${r.why}: ${r.line.slice(0, 160)}`);
    assert.deepEqual(results.filter((r) => r.problem).map((r) => `${r.why}: ${r.problem} — ${JSON.stringify(r.line)}`), []);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => !f.endsWith('.yaml')), [], 'nothing created (no root dir) by a refused config');
    t.diagnostic(`config corpus: ${results.length} cases, all exit 2 with one line`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
