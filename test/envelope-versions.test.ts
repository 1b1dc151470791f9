/**
 * Envelope format v2's sealed version (issue 11 item 5): what seal writes, that
 * the tag covers it, that v1 still opens as version 0, and the replay guard
 * (reconcile/secrets.ts) on top of in-memory high-water marks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { EnvelopeError, claimedVersion, open, openVersioned, seal } from '../src/envelope/envelope.js';
import { MAX_SEALED_VERSION } from '../src/envelope/format.js';
import { Keyring, generateIdentity, recipientOf, writeIdentityFile, type Identity } from '../src/envelope/identity.js';
import { UserError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { ReplayedEnvelope, replayGuarded } from '../src/reconcile/secrets.js';
import { HighWater } from '../src/state/highwater.js';
import { sealRaw } from './helpers/envelope-raw.js';

const PATH = 'global/secrets/default/db/password';
const alice: Identity = generateIdentity(() => Buffer.alloc(32, 7));
const ring = new Keyring([alice]);
const to = [recipientOf(alice.publicKey)];
const bodyOf = (text: string) => Buffer.from(text.slice('confsync:vN:'.length), 'base64url');
const T0 = Date.UTC(2026, 11, 4, 12, 0, 0);

test('seal writes format v2 with the sealing time as its version; openVersioned returns it', async () => {
  const env = await seal(Buffer.from('x'), PATH, to, undefined, { now: () => T0 });
  assert.ok(env.startsWith('confsync:v2:'));
  assert.equal(bodyOf(env).readBigUInt64BE(0), BigInt(T0), 'u64be ms at offset 0');
  assert.deepEqual(await openVersioned(env, PATH, ring), { plaintext: Buffer.from('x'), version: T0 });
  assert.equal(claimedVersion(env), T0);
  const now = Date.now();
  const fresh = (await openVersioned(await seal(Buffer.from('x'), PATH, to), PATH, ring)).version;
  assert.ok(fresh >= now && fresh <= Date.now(), 'default clock is Date.now()');
});

test('`after` moves a path forward even when the clock is behind', async () => {
  const version = async (after?: number) => (await openVersioned(await seal(Buffer.from('x'), PATH, to, undefined, { now: () => T0, after }), PATH, ring)).version;
  assert.equal(await version(T0 + 60_000), T0 + 60_001, 'clock behind the replaced value: one above it');
  assert.equal(await version(T0 - 60_000), T0, 'clock ahead: the clock');
  assert.equal(await version(0), T0);
  await assert.rejects(seal(Buffer.from('x'), PATH, to, undefined, { after: MAX_SEALED_VERSION }), UserError);
});

test('the version is authenticated: any change to its 8 bytes fails to open', async () => {
  const env = await seal(Buffer.from('pw'), PATH, to, undefined, { now: () => T0 });
  const body = bodyOf(env);
  for (let i = 0; i < 8; i++) {
    for (const bit of [0, 7]) {
      const b = Buffer.from(body);
      b[i]! ^= 1 << bit;
      await assert.rejects(open('confsync:v2:' + b.toString('base64url'), PATH, ring), (e: unknown) => e instanceof EnvelopeError && e.reason === 'corrupt');
    }
  }
  // Newer-looking by a whole year: still the same failure, the tag does not care which way.
  const later = Buffer.from(body);
  later.writeBigUInt64BE(BigInt(T0 + 365 * 86_400_000), 0);
  await assert.rejects(open('confsync:v2:' + later.toString('base64url'), PATH, ring), EnvelopeError);
  // Relabelling the text's format version fails both ways.
  await assert.rejects(open(env.replace(':v2:', ':v1:'), PATH, ring), EnvelopeError);
  const v1 = sealRaw(Buffer.from('pw'), PATH, alice.publicKey, 1);
  await assert.rejects(open(v1.replace(':v1:', ':v2:'), PATH, ring), EnvelopeError);
});

test('v1 envelopes still open, as version 0', async () => {
  const v1 = sealRaw(Buffer.from('old-style'), PATH, alice.publicKey, 1);
  assert.ok(v1.startsWith('confsync:v1:'));
  assert.deepEqual(await openVersioned(v1, PATH, ring), { plaintext: Buffer.from('old-style'), version: 0 });
  assert.equal(claimedVersion(v1), 0);
  assert.equal(claimedVersion('hunter2'), undefined);
  await assert.rejects(open(v1, 'global/secrets/default/db/other', ring), EnvelopeError, 'still bound to its path');
});

test('a v2 version of 0 or above 2^53-1 is corrupt even with a good tag', async () => {
  const big = Buffer.alloc(8);
  big.writeBigUInt64BE(BigInt(MAX_SEALED_VERSION) + 1n);
  for (const raw of [Buffer.alloc(8), big, Buffer.alloc(8, 0xff)]) {
    await assert.rejects(open(sealRaw(Buffer.from('x'), PATH, alice.publicKey, 2, raw), PATH, ring), (e: unknown) => e instanceof EnvelopeError && e.reason === 'corrupt');
  }
  const max = Buffer.alloc(8);
  max.writeBigUInt64BE(BigInt(MAX_SEALED_VERSION));
  assert.equal((await openVersioned(sealRaw(Buffer.from('x'), PATH, alice.publicKey, 2, max), PATH, ring)).version, MAX_SEALED_VERSION);
});

// The old /[ \t\r\n]+$/ took ~27 s on 200 000 spaces and a letter (quadratic
// backtracking); the bound here is about complexity, not speed.
test('a long whitespace run inside a value is refused in linear time', { timeout: 20_000 }, async () => {
  const evil = 'confsync:v2:' + ' '.repeat(300_000) + 'x';
  await assert.rejects(open(evil, PATH, ring), (e: unknown) => e instanceof EnvelopeError && e.reason === 'corrupt');
  const env = await seal(Buffer.from('x'), PATH, to);
  assert.deepEqual(await open(env + ' \t\r\n'.repeat(50_000), PATH, ring), Buffer.from('x'), 'trailing whitespace still ignored');
});

test('replay guard: older refused (plaintext zeroed), equal and newer accepted, v1 after v2 refused, per path', async () => {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  const marks = HighWater.inMemory(logger);
  const given: Buffer[] = [];
  const guarded = replayGuarded(async (p, v) => {
    const r = await openVersioned(v, p, ring);
    given.push(r.plaintext);
    return r;
  }, marks);
  const at = (t: number, value = `v${t}`, path = PATH) => seal(Buffer.from(value), path, to, undefined, { now: () => t });
  const [a, b] = [await at(T0, 'pw-a'), await at(T0 + 1000, 'pw-b')];

  assert.deepEqual(await guarded(PATH, Buffer.from(a)), Buffer.from('pw-a'));
  assert.deepEqual(await guarded(PATH, Buffer.from(b)), Buffer.from('pw-b'));
  assert.equal(marks.mark(PATH), T0 + 1000);
  await assert.rejects(guarded(PATH, Buffer.from(a)), (e: unknown) => {
    assert.ok(e instanceof ReplayedEnvelope && e.reason === 'replayed');
    assert.equal(e.message, `envelope refused as a replay: sealed ${new Date(T0).toISOString()}, older than the newest applied at this path (sealed ${new Date(T0 + 1000).toISOString()})`);
    return true;
  });
  assert.deepEqual(given.at(-1), Buffer.alloc(4), 'the refused plaintext was zeroed');
  assert.equal(marks.mark(PATH), T0 + 1000, 'a refusal does not move the mark');
  assert.deepEqual(await guarded(PATH, Buffer.from(b)), Buffer.from('pw-b'), 'the same envelope again (re-list, restart) opens');
  await assert.rejects(guarded(PATH, Buffer.from(sealRaw(Buffer.from('v1'), PATH, alice.publicKey, 1))), /unversioned \(format v1\), older than/);

  const far = 'global/secrets/default/db/far'; // a clock far ahead: past what Date can show
  assert.deepEqual(await guarded(far, Buffer.from(await at(MAX_SEALED_VERSION, 'f', far))), Buffer.from('f'));
  await assert.rejects(guarded(far, Buffer.from(await at(T0, 'g', far))), { message: `envelope refused as a replay: sealed ${new Date(T0).toISOString()}, older than the newest applied at this path (sealed version ${MAX_SEALED_VERSION})` });

  const other = 'global/secrets/default/db/user';
  assert.deepEqual(await guarded(other, Buffer.from(await at(T0 - 5000, 'u', other))), Buffer.from('u'), 'marks are per path');
  const fresh = 'global/secrets/default/db/host';
  assert.deepEqual(await guarded(fresh, Buffer.from(sealRaw(Buffer.from('v1'), fresh, alice.publicKey, 1))), Buffer.from('v1'), 'v1 opens where nothing newer was applied');
  assert.equal(marks.mark(fresh), 0);
  assert.equal(marks.mark(other), T0 - 5000);
  assert.deepEqual(lines, [], 'nothing logged');
});

test('interop: PyNaCl, following only docs/envelope-format.md, opens v2 and v1 and seals v2 that we open', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'confsync-interop-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const script = fileURLToPath(new URL('../../test/envelope-interop.py', import.meta.url));
  const py = (...args: string[]) => {
    const res = spawnSync('/usr/bin/python3', [script, ...args], { maxBuffer: 1 << 20 });
    if (res.error) assert.fail(`cannot run /usr/bin/python3 (${res.error.message}): apt-get install python3 python3-nacl`);
    if (res.status === 3) assert.fail('python3-nacl is missing: apt-get install python3-nacl');
    return res;
  };
  const path = 'clusters/prod-eu/secrets/kube-system/db/pass.word';
  const secret = Buffer.from('s3cr3t-\u00e9\n\x00\xff-0123456789abcdef', 'latin1');
  const [bob, carol, mallory] = [2, 3, 4].map((seed) => generateIdentity(() => Buffer.alloc(32, seed))) as [Identity, Identity, Identity];
  await writeIdentityFile(join(dir, 'identity'), [mallory, carol]); // the second key is the recipient
  await writeFile(join(dir, 'path'), path);

  // (a) Python opens what we seal (v2), and reads the same version
  await writeFile(join(dir, 'envelope'), (await seal(secret, path, [alice, bob, carol].map((i) => recipientOf(i.publicKey)), undefined, { now: () => T0 })) + '\n');
  let res = py(dir);
  assert.equal(res.status, 0, res.stderr.toString());
  assert.deepEqual(res.stdout, secret);
  assert.equal(await readFile(join(dir, 'opened-version'), 'utf8'), `${T0}\n`);
  // (b) and v1, as version 0
  await writeFile(join(dir, 'envelope'), sealRaw(secret, path, carol.publicKey, 1));
  res = py(dir);
  assert.equal(res.status, 0, res.stderr.toString());
  assert.deepEqual(res.stdout, secret);
  assert.equal(await readFile(join(dir, 'opened-version'), 'utf8'), '0\n');
  // (c) the path is bound in Python too
  await writeFile(join(dir, 'path'), path.replace('prod-eu', 'prod-us'));
  res = py(dir);
  assert.equal(res.status, 1, 'the Python opener binds the path too');
  assert.equal(res.stdout.length, 0);

  // (d) we open what Python seals, with its version; a flipped version byte fails
  await writeFile(join(dir, 'path'), path);
  await writeFile(join(dir, 'plaintext'), secret);
  await writeFile(join(dir, 'version'), `${T0 + 42}\n`);
  await writeFile(join(dir, 'recipient'), `${recipientOf(bob.publicKey).text}\n${recipientOf(carol.publicKey).text}\n`);
  res = py('--seal', dir);
  assert.equal(res.status, 0, res.stderr.toString());
  const env = res.stdout.toString();
  assert.match(env, /^confsync:v2:[A-Za-z0-9_-]+\n$/);
  for (const id of [bob, carol]) assert.deepEqual(await openVersioned(env, path, new Keyring([id])), { plaintext: secret, version: T0 + 42 });
  const body = bodyOf(env.trim());
  body[7]! ^= 1;
  await assert.rejects(open('confsync:v2:' + body.toString('base64url'), path, new Keyring([carol])), EnvelopeError);
});
