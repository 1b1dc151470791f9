/**
 * `recipients pull` accepts a changed cluster key only one cluster at a time, by
 * fingerprint. The attack this pins down: with c1 and c2 pinned, someone who can
 * write etcd replaces recipients/c2 with their own key; the operator then rotates
 * c1 as docs/secrets.md says. A blanket "accept every changed key" re-pins c2 to
 * the attacker too, and the next `secret set` seals to them. The built CLI runs
 * as a child process against a real etcd.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { runCli, type CliRun } from './harness/cli.js';
import { parseRecipient } from '../src/envelope/identity.js';

const P = '/confsync';
let etcd: EtcdHandle;
let dir: string;


function cli(args: string[], input = ''): CliRun {
  return runCli(args, { cwd: dir, endpoint: etcd.endpoint, input });
}

function ok(args: string[], input?: string): CliRun {
  const r = cli(args, input);
  assert.equal(r.code, 0, `confsync ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

const key = (name: string) => path.join(dir, `${name}.key`);
const pinnedFile = () => path.join(dir, 'confsync-recipients.yaml');
const pinnedText = () => fs.readFileSync(pinnedFile(), 'utf8');
const pinnedC = (c: string) => parse(pinnedText()).clusters[c] as string;
const fp = (recipient: string) => parseRecipient(recipient).id;

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-pull-'));
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('rotating c1 while an attacker replaced c2: only the fingerprint the operator names is pinned', () => {
  // c1 and c2 registered and pinned.
  const c1Old = ok(['keygen', '--out', key('c1'), '--register', '--cluster', 'c1']).stdout.trim();
  const c2 = ok(['keygen', '--out', key('c2'), '--register', '--cluster', 'c2']).stdout.trim();
  ok(['recipients', 'pull', '--yes']);
  assert.equal(pinnedC('c2'), c2);

  // The attacker swaps in their own key for c2.
  const evil = ok(['keygen', '--out', key('evil')]).stdout.trim();
  etcd.ctl('put', `${P}/recipients/c2`, evil);

  // The operator rotates c1 (docs/secrets.md): add a key, re-register it.
  const keygen = ok(['keygen', '--out', key('c1'), '--add', '--register', '--cluster', 'c1']);
  const c1New = keygen.stdout.trim();
  assert.match(keygen.stderr, new RegExp(`added key ${fp(c1New)}`), 'keygen shows the fingerprint to compare');
  const before = pinnedText();

  // (1) No blanket acceptance: --force is refused and names --accept.
  const forced = cli(['recipients', 'pull', '--force']);
  assert.equal(forced.code, 2, `--force must be refused; stderr: ${forced.stderr}`);
  assert.match(forced.stderr, /^confsync: .*--accept CLUSTER=FINGERPRINT/m);
  assert.equal(pinnedText(), before, 'nothing pinned');

  // (2) A plain pull shows each changed cluster with old and new fingerprint and exits non-zero.
  const shown = cli(['recipients', 'pull']);
  assert.notEqual(shown.code, 0);
  assert.match(shown.stdout, new RegExp(`^c1\\s+${fp(c1New)}\\s+CHANGED \\(pinned ${fp(c1Old)}\\)$`, 'm'));
  assert.match(shown.stdout, new RegExp(`^c2\\s+${fp(evil)}\\s+CHANGED \\(pinned ${fp(c2)}\\)$`, 'm'));
  assert.match(shown.stderr, /c1.*c2|2 changed/);
  assert.equal(pinnedText(), before, 'nothing pinned');

  // (3) A wrong fingerprint for c1 (the registration changed again since it was compared) pins nothing.
  const wrong = cli(['recipients', 'pull', '--accept', `c1=${fp(c1Old)}`]);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, new RegExp(`--accept c1=${fp(c1Old)}: .*${fp(c1New)}`));
  assert.equal(pinnedText(), before, 'nothing pinned');
  for (const bad of ['c1', 'c1=xyz', `C1=${fp(c1New)}`, `nope=${fp(c1New)}`]) {
    const r = cli(['recipients', 'pull', '--accept', bad]);
    assert.equal(r.code, 2, `--accept ${bad}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
    assert.match(r.stderr, /^confsync: --accept /);
  }
  assert.equal(pinnedText(), before, 'nothing pinned');

  // (4) Accepting c1's new fingerprint pins c1 only; c2 stays on its pinned key and pull still fails.
  const accepted = cli(['recipients', 'pull', '--accept', `c1=${fp(c1New)}`]);
  assert.notEqual(accepted.code, 0, 'c2 is still unaccepted');
  assert.match(accepted.stderr, /c2/);
  assert.equal(pinnedC('c1'), c1New);
  assert.equal(pinnedC('c2'), c2, 'the attacker key is not pinned');

  // (5) Secrets written now are sealed to c1's new key and the real c2, not to the attacker.
  ok(['secret', 'set', 'default/db/password'], 'pw-after-rotation');
  assert.equal(ok(['secret', 'get', 'default/db/password', '--identity', key('c2')]).stdout, 'pw-after-rotation');
  assert.equal(ok(['secret', 'get', 'default/db/password', '--identity', key('c1')]).stdout, 'pw-after-rotation');
  const evilGet = cli(['secret', 'get', 'default/db/password', '--identity', key('evil')]);
  assert.equal(evilGet.code, 2);
  assert.match(evilGet.stderr, /not-a-recipient/);
  assert.ok(!evilGet.stdout.includes('pw-after-rotation'));

  // (6) Once the operator fixes c2's registration, pull succeeds again with nothing to accept.
  etcd.ctl('put', `${P}/recipients/c2`, c2);
  assert.match(ok(['recipients', 'pull']).stdout, /^c2\s+[0-9a-f]{16}\s+pinned$/m);
});

test('--accept also pins a NEW cluster at the named fingerprint (no --yes needed), and only at it', () => {
  const c3 = ok(['keygen', '--out', key('c3'), '--register', '--cluster', 'c3']).stdout.trim();
  const other = ok(['keygen', '--out', key('other')]).stdout.trim();
  const refused = cli(['recipients', 'pull', '--accept', `c3=${fp(other)}`]);
  assert.equal(refused.code, 2);
  assert.equal(parse(pinnedText()).clusters.c3, undefined);
  ok(['recipients', 'pull', '--accept', `c3=${fp(c3)}`]);
  assert.equal(pinnedC('c3'), c3);
});
