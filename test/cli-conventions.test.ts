/**
 * CLI conventions (issue 14 item 7), through the built CLI as a child process
 * against a real etcd: `version`, shell completion generated from the command
 * tree, `-o json|yaml` on the listing verbs, short flags with one meaning each,
 * `config get --merged`, scopes in `config ls`, keygen refusing to create parent
 * directories unasked.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import type { Command } from 'commander';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { runCli, type CliRun } from './harness/cli.js';
import { buildProgram } from '../src/cli/index.js';
import { VERSION } from '../src/version.js';

const P = '/confsync';
const SECRET = 'hunter2-never-printed-7f3a';
let etcd: EtcdHandle;
let dir: string;

function cli(args: string[], input = '', env: Record<string, string | undefined> = {}): CliRun {
  return runCli(args, { cwd: dir, endpoint: etcd.endpoint, input, env });
}

function ok(args: string[], input = ''): CliRun {
  const r = cli(args, input);
  assert.equal(r.code, 0, `confsync ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r;
}

/** A user mistake: exit 2 and one line on stderr. */
function usage(args: string[]): string {
  const r = cli(args);
  assert.equal(r.code, 2, `expected exit 2 from ${args.join(' ')}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  return lines[0]!;
}

function etcdPut(key: string, value: string): void {
  const r = spawnSync('etcdctl', ['--endpoints', etcd.endpoint, 'put', `${P}/${key}`], { input: value, encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
  assert.equal(r.status, 0, r.stderr);
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-conv-'));
  // A cluster identity and pinned recipients, so secret verbs work; short flags throughout.
  ok(['keygen', '--out', 'eu.key', '--register', '-c', 'eu']);
  ok(['recipients', 'pull', '--yes']);
  ok(['secret', 'set', 'default/db/password', '-c', 'eu'], SECRET);
  ok(['config', 'set', 'default/app/level', 'info']);
  ok(['config', 'set', 'default/app/level', 'debug', '-c', 'eu']);
  ok(['config', 'set', 'default/app/port', '8080']);
  ok(['config', 'set', 'default/app/only-us', 'x', '--cluster', 'us']);
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('confsync version: version, Node version and platform; -o json and yaml', () => {
  const text = ok(['version']).stdout;
  assert.match(text, new RegExp(`^confsync ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(text, new RegExp(`^node +${process.versions.node.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(text, new RegExp(`^platform +${process.platform}-${process.arch}$`, 'm'));
  const info = { version: VERSION, node: process.versions.node, platform: process.platform, arch: process.arch };
  assert.deepEqual(JSON.parse(ok(['version', '-o', 'json']).stdout), info);
  assert.deepEqual(parse(ok(['version', '--output', 'yaml']).stdout), info);
  assert.match(usage(['version', '-o', 'xml']), /argument 'xml' is invalid/);
});

test('completion bash: generated from the command tree; sourced in bash, it completes verbs, subcommands, flags and choices', () => {
  const script = ok(['completion', 'bash']).stdout;
  fs.writeFileSync(path.join(dir, 'c.bash'), script);
  const complete = (...words: string[]) => {
    const arr = words.map((w) => `'${w}'`).join(' ');
    const r = spawnSync('bash', ['-c', `source c.bash; COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _confsync; printf '%s\\n' "\${COMPREPLY[@]}"`], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  };
  assert.deepEqual(complete('confsync', 'con'), ['config', 'console']);
  assert.deepEqual(complete('confsync', 'conf'), ['config']);
  assert.deepEqual(complete('confsync', 'config', 's'), ['set']);
  assert.deepEqual(complete('confsync', 'secret', 'l'), ['ls']);
  assert.deepEqual(complete('confsync', 'config', 'get', '--mer'), ['--merged']);
  assert.deepEqual(complete('confsync', 'status', '-o', ''), ['text', 'json', 'yaml']);
  assert.deepEqual(complete('confsync', 'completion', ''), ['bash', 'zsh', 'fish', '-h', '--help']);
  assert.ok(complete('confsync', 'secret', 'get', '-').includes('-i'), 'short flags complete too');
  // Nothing hand-kept: every verb of the real tree is offered at the top.
  const top = complete('confsync', '');
  for (const c of buildProgram().commands) assert.ok(top.includes(c.name()), `${c.name()} offered`);
});

test('completion zsh and fish: the scripts parse (zsh -n, fish -n) and complete the same tree', { skip: !has('zsh') && !has('fish') && 'neither zsh nor fish is installed' }, () => {
  if (has('zsh')) {
    fs.writeFileSync(path.join(dir, 'c.zsh'), ok(['completion', 'zsh']).stdout);
    const n = spawnSync('zsh', ['-n', 'c.zsh'], { cwd: dir, encoding: 'utf8' });
    assert.equal(n.status, 0, n.stderr);
    // zsh filters by the typed prefix itself; the function must find the `config` node (1-based words handled).
    const r = spawnSync('zsh', ['-f', '-c', 'source c.zsh; COMP_WORDS=(confsync config s); COMP_CWORD=2; _confsync; print -l -- $COMPREPLY'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\n').filter(Boolean).filter((w) => !w.startsWith('-')), ['set', 'get', 'rm', 'ls']);
  }
  if (has('fish')) {
    fs.writeFileSync(path.join(dir, 'c.fish'), ok(['completion', 'fish']).stdout);
    const n = spawnSync('fish', ['-n', 'c.fish'], { cwd: dir, encoding: 'utf8' });
    assert.equal(n.status, 0, n.stderr);
    const r = spawnSync('fish', ['-c', 'source c.fish; complete -C "confsync config s"; complete -C "confsync conf"'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]), ['set', 'config']);
  }
});

test('short flags: each letter means one long option in every verb (-c cluster, -i identity, -r recipient, -o output)', () => {
  const meaning = new Map<string, Set<string>>();
  const walk = (cmd: Command) => {
    for (const o of cmd.options) if (o.short) meaning.set(o.short, new Set([...(meaning.get(o.short) ?? []), o.long ?? '']));
    cmd.commands.forEach(walk);
  };
  walk(buildProgram());
  for (const [short, longs] of meaning) assert.equal(longs.size, 1, `${short} means ${[...longs].join(' and ')}`);
  assert.deepEqual(Object.fromEntries([...meaning].map(([s, l]) => [s, [...l][0]])), { '-V': '--version', '-c': '--cluster', '-i': '--identity', '-r': '--recipient', '-o': '--output' });

  // And they work: -i opens, -c picks the scope, -r seals.
  assert.equal(ok(['secret', 'get', 'default/db/password', '-c', 'eu', '-i', 'eu.key']).stdout, SECRET);
  const recipient = fs.readFileSync(path.join(dir, 'eu.key'), 'utf8').match(/# recipient: (\S+)/)![1]!;
  assert.match(ok(['seal', '-r', recipient, '--path', 'clusters/eu/secrets/default/db/other'], 'v').stdout, /\S/);
});

test('-o json|yaml on the listing verbs: structured, the same data in both, never a secret value', () => {
  const both = (args: string[]) => {
    const json = JSON.parse(ok([...args, '-o', 'json']).stdout);
    const yaml = parse(ok([...args, '--output', 'yaml']).stdout);
    assert.deepEqual(yaml, json, `${args.join(' ')}: yaml and json agree`);
    return json;
  };
  const cfg = both(['config', 'ls']);
  assert.deepEqual(
    cfg.entries.map((e: any) => `${e.scope} ${e.ref}`).sort(),
    ['clusters/eu default/app/level', 'clusters/us default/app/only-us', 'global default/app/level', 'global default/app/port'],
  );
  const get = both(['config', 'get', 'default/app/level', '-c', 'eu']);
  assert.equal(get.value, 'debug');
  assert.equal(get.scope, 'clusters/eu');

  const secrets = both(['secret', 'ls', '-c', 'eu']);
  assert.deepEqual(secrets.secrets.map((s: any) => s.path), ['clusters/eu/secrets/default/db/password']);
  assert.match(secrets.secrets[0].who, /^sealed to /);
  const rec = both(['recipients', 'ls']);
  assert.deepEqual(rec.clusters.map((c: any) => c.cluster), ['eu']);
  const hist = both(['history', 'default/app']);
  assert.ok(hist.revisions.length >= 2);
  const lint = both(['lint']);
  assert.deepEqual(lint.problems, []);
  const config = path.join(dir, 'plan.yaml');
  fs.writeFileSync(config, `cluster: eu\nnode: n1\netcd:\n  endpoints: [${etcd.endpoint}]\nstateDir: ${path.join(dir, 'state')}\nsinks:\n  files:\n    root: ${path.join(dir, 'out')}\n`);
  const plan = both(['plan', '--config', config]);
  assert.equal(plan.cluster, 'eu');
  assert.deepEqual(plan.changes, [{ sink: 'files', action: 'create', id: 'configmaps/default/app' }]);
  assert.equal(fs.existsSync(path.join(dir, 'out', 'configmaps')), false, 'plan writes nothing');
  const status = both(['status']);
  assert.deepEqual(status.nodes, []);
  assert.deepEqual(JSON.parse(ok(['status', '--json']).stdout), status, '--json stays an alias of -o json');
  assert.match(usage(['status', '--json', '-o', 'yaml']), /--json and -o yaml: choose one/);

  for (const args of [['secret', 'ls', '-c', 'eu'], ['secret', 'ls'], ['history', 'default/db', '--kind', 'secrets', '-c', 'eu'], ['lint', '-i', 'eu.key']]) {
    for (const o of ['text', 'json', 'yaml']) {
      const r = cli([...args, '-o', o]);
      assert.ok(!`${r.stdout}${r.stderr}`.includes(SECRET), `${args.join(' ')} -o ${o} prints no secret value`);
    }
  }
});

test('config get --merged --cluster C: the value C gets and the scope it comes from, by the daemon\'s layering and placement', () => {
  const merged = (cluster: string, key: string) => JSON.parse(ok(['config', 'get', `default/app/${key}`, '--merged', '-c', cluster, '-o', 'json']).stdout);
  const eu = merged('eu', 'level');
  assert.equal(eu.value, 'debug');
  assert.equal(eu.scope, 'clusters/eu');
  assert.equal(eu.overrides, 'global/configmaps/default/app/level');
  assert.equal(merged('eu', 'port').scope, 'global');
  assert.equal(merged('us', 'level').value, 'info');
  assert.equal(merged('us', 'level').scope, 'global');

  // Text: the raw value on stdout (it must round-trip), the scope on stderr.
  const text = ok(['config', 'get', 'default/app/level', '--merged', '-c', 'eu']);
  assert.equal(text.stdout, 'debug');
  assert.match(text.stderr, /^from clusters\/eu \(clusters\/eu\/configmaps\/default\/app\/level @ revision \d+; overrides global\/configmaps\/default\/app\/level\)\n$/);

  // Placement: the global object is placed only on clusters labelled tier=gold.
  etcdPut('global/configmaps/default/placed/k', 'gold-only');
  etcdPut('global/configmaps/default/placed/@meta', JSON.stringify({ placement: { clusterSelector: { matchLabels: { tier: 'gold' } } } }));
  assert.match(usage(['config', 'get', 'default/placed/k', '--merged', '-c', 'eu']), /global has k but its @meta placement does not admit cluster eu/);
  assert.equal(ok(['config', 'get', 'default/placed/k', '--merged', '-c', 'eu', '--label', 'tier=gold']).stdout, 'gold-only');
  assert.match(usage(['config', 'get', 'default/app/level', '--merged']), /--merged needs --cluster C/);
  assert.match(usage(['config', 'get', 'default/app/nope', '--merged', '-c', 'eu']), /no key nope in global or clusters\/eu/);
});

test('config ls: a SCOPE column; with --cluster, global and that scope with overrides marked', () => {
  const all = ok(['config', 'ls', 'default/app']).stdout.split('\n').filter(Boolean);
  assert.equal(all[0], 'SCOPE\tKEY\tSIZE\tREV\tNOTE');
  assert.ok(all.some((l) => /^clusters\/us\tdefault\/app\/only-us\t1 bytes\trev \d+$/.test(l)), all.join('\n'));
  const eu = ok(['config', 'ls', 'default/app', '-c', 'eu']).stdout;
  assert.match(eu, /^global\tdefault\/app\/level\t4 bytes\trev \d+\toverridden by clusters\/eu$/m);
  assert.match(eu, /^clusters\/eu\tdefault\/app\/level\t5 bytes\trev \d+\toverrides global on eu$/m);
  assert.match(eu, /^global\tdefault\/app\/port\t4 bytes\trev \d+$/m);
  assert.doesNotMatch(eu, /only-us/, 'other clusters are not listed with --cluster');
  const json = JSON.parse(ok(['config', 'ls', 'default/app', '-c', 'eu', '-o', 'json']).stdout);
  assert.deepEqual(json.entries.filter((e: any) => e.mark).map((e: any) => `${e.scope} ${e.mark}`), ['global overridden', 'clusters/eu override']);
});

test('keygen --out into a missing directory: refused naming it (exit 2), nothing created; --mkdir creates it 0700, key 0600', () => {
  const line = usage(['keygen', '--out', 'a/b/id.key']);
  assert.equal(line, 'confsync: --out a/b/id.key: directory a/b does not exist (create it, or pass --mkdir to create it with mode 0700)');
  assert.equal(fs.existsSync(path.join(dir, 'a')), false, 'no directory created');
  const r = ok(['keygen', '--out', 'a/b/id.key', '--mkdir']);
  assert.match(r.stderr, /created directory a\/b \(mode 0700\)/);
  assert.equal(fs.statSync(path.join(dir, 'a/b')).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(dir, 'a/b/id.key')).mode & 0o777, 0o600);
  // An existing directory needs no flag.
  ok(['keygen', '--out', 'a/b/second.key']);
});
