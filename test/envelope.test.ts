import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvelopeError, envelopeRecipients, isEnvelope, open, seal, type EnvelopeFailure } from '../src/envelope/envelope.js';
import {
  Keyring,
  fingerprint,
  formatSecretKey,
  generateIdentity,
  loadKeyring,
  parseRecipient,
  recipientOf,
  writeIdentityFile,
  type Identity,
} from '../src/envelope/identity.js';
import { UserError } from '../src/errors.js';

const PATH = 'global/secrets/default/db/password';
const PREFIX = 'confsync:v2:';
/** Bytes before the count in a v2 body: the sealed version. */
const S = 8;
const SECRET = Buffer.from('s3cr3t-\u00e9\n\x00\xff-0123456789abcdef0123456789abcdef0123456789abcdef0', 'latin1');

const [alice, bob, carol, mallory] = [1, 2, 3, 4].map((seed) => generateIdentity(() => Buffer.alloc(32, seed))) as [
  Identity,
  Identity,
  Identity,
  Identity,
];
const ring = (...ids: Identity[]) => new Keyring(ids);
const rcpt = (...ids: Identity[]) => ids.map((i) => recipientOf(i.publicKey));

const bodyOf = (text: string) => Buffer.from(text.slice(PREFIX.length), 'base64url');
const textOf = (body: Uint8Array) => PREFIX + Buffer.from(body).toString('base64url');
function flip(text: string, offset: number, bit = 0): string {
  const body = bodyOf(text);
  body[offset]! ^= 1 << bit;
  return textOf(body);
}

/** Asserts the one generic error, optionally with a reason, and that the message leaks nothing. */
async function refuses(text: string, keyring: Keyring, reason?: EnvelopeFailure, path = PATH): Promise<void> {
  await assert.rejects(open(text, path, keyring), (err: unknown) => {
    assert.ok(err instanceof EnvelopeError, `expected EnvelopeError, got ${String(err)}`);
    assert.match(err.message, /^envelope cannot be opened \([a-z-]+\)$/);
    if (reason) assert.equal(err.reason, reason);
    return true;
  });
}

// Layout of a v2 body: version 8 | N(1) | N x (fingerprint 8 | sealed key 80) | nonce 24 | ciphertext L | tag 16
const layout = (n: number, plainLength: number) => {
  const h = S + 1 + 88 * n;
  return { h, nonce: h, ciphertext: h + 24, tag: h + 24 + plainLength, end: h + 24 + plainLength + 16 };
};

test('round trip, one recipient; empty and binary plaintexts', async () => {
  for (const plain of [SECRET, Buffer.alloc(0), Buffer.alloc(70_000, 0xab)]) {
    const env = await seal(plain, PATH, rcpt(alice));
    assert.ok(isEnvelope(env) && env.startsWith(PREFIX) && /^[\x21-\x7e]+$/.test(env));
    assert.deepEqual(await open(env, PATH, ring(alice)), plain);
    assert.deepEqual(await open(env + '\n', PATH, ring(alice)), plain, 'trailing newline from a pipe is ignored');
    assert.deepEqual(await open(Buffer.from(env), PATH, ring(alice)), plain, 'etcd Buffer values work too');
  }
});

test('round trip, three recipients: each opens, ids listed in order, duplicates sealed once', async () => {
  const env = await seal(SECRET, 'clusters/prod-eu/secrets/default/db/password', rcpt(alice, bob, carol, bob));
  assert.deepEqual(envelopeRecipients(env), rcpt(alice, bob, carol).map((r) => r.id));
  for (const id of [alice, bob, carol]) {
    assert.deepEqual(await open(env, 'clusters/prod-eu/secrets/default/db/password', ring(id)), SECRET);
  }
  assert.equal(bodyOf(env).length, layout(3, SECRET.length).end);
});

test('multi-key identity file: the second key opens; comments and blank lines allowed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'confsync-env-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'identity.key');
  await writeIdentityFile(file, [mallory, carol]);
  const env = await seal(SECRET, PATH, rcpt(alice, carol));
  const keyring = await loadKeyring(file);
  assert.equal(keyring.size, 2);
  assert.deepEqual(await open(env, PATH, keyring), SECRET);

  const text = await readFile(file, 'utf8');
  await writeFile(file, `\n# rotated in 2025\n\n  ${text.split('\n').filter((l) => l.startsWith('CONFSYNC-'))[1]}  \n`, { mode: 0o600 });
  assert.deepEqual(await open(env, PATH, await loadKeyring(file)), SECRET);
  keyring.dispose();
  await refuses(env, keyring, 'not-a-recipient');
});

test('every tamper class fails with EnvelopeError', async () => {
  const env = await seal(SECRET, PATH, rcpt(alice, bob, carol));
  const L = layout(3, SECRET.length);
  const bobs = ring(bob);
  // named fields
  await refuses('x' + env.slice(1), bobs, 'not-an-envelope'); // magic
  await refuses(env.replace('confsync:', 'confsynC:'), bobs, 'not-an-envelope');
  await refuses(env.replace(':v2:', ':v0:'), bobs, 'unsupported-version'); // format version
  await refuses(env.replace(':v2:', ':v1:'), bobs, 'corrupt'); // a v2 body read as v1
  await refuses(env.replace(':v2:', ':w2:'), bobs, 'corrupt');
  for (let i = 0; i < S; i++) await refuses(flip(env, i, i % 8), bobs, 'corrupt'); // sealed version: every byte is in the AD
  await refuses(flip(env, S), bobs, 'corrupt'); // recipient count
  await refuses(flip(env, S, 1), bobs); // count 3 -> 1: bob's stanza is gone
  for (let i = 0; i < 3; i++) {
    await refuses(flip(env, S + 1 + 88 * i + 3, 2), bobs, i === 1 ? 'not-a-recipient' : 'corrupt'); // fingerprint i
    await refuses(flip(env, S + 9 + 88 * i + 40, 5), bobs, 'corrupt'); // sealed key i
  }
  await refuses(flip(env, L.nonce + 7), bobs, 'corrupt');
  await refuses(flip(env, L.ciphertext), bobs, 'corrupt');
  await refuses(flip(env, L.ciphertext + SECRET.length - 1, 7), bobs, 'corrupt');
  await refuses(flip(env, L.tag), bobs, 'corrupt');
  await refuses(flip(env, L.end - 1, 7), bobs, 'corrupt');
  // exhaustive: one bit in every body byte, and one bit in every text character
  for (let i = 0; i < L.end; i++) await refuses(flip(env, i, i % 8), bobs);
  for (let i = 0; i < env.length; i++) {
    await refuses(env.slice(0, i) + String.fromCharCode(env.charCodeAt(i) ^ (1 << i % 7)) + env.slice(i + 1), bobs);
  }
});

test('truncation, extension and bad encoding fail', async () => {
  const env = await seal(SECRET, PATH, rcpt(alice, bob));
  const L = layout(2, SECRET.length);
  const body = bodyOf(env);
  for (const at of [0, 1, 5, S, S + 1, S + 89, S + 177, L.nonce, L.ciphertext, L.tag, L.end - 1]) {
    await refuses(textOf(body.subarray(0, at)), ring(bob), 'corrupt');
  }
  for (const at of [0, 8, 9, 11, 12, 13, 40, env.length - 1, env.length - 2, env.length - 3]) {
    await refuses(env.slice(0, at), ring(bob));
  }
  await refuses(textOf(Buffer.concat([body, Buffer.from([0])])), ring(bob), 'corrupt');
  await refuses(env + 'A', ring(bob), 'corrupt');
  await refuses(env + '==', ring(bob), 'corrupt');
  await refuses(' ' + env, ring(bob), 'not-an-envelope');
  await refuses(env.slice(0, 40) + '\n' + env.slice(40), ring(bob), 'corrupt');
  await refuses(env.slice(0, 40) + '+' + env.slice(41), ring(bob), 'corrupt'); // standard-base64 char

  // one body, one text: a last character differing only in unused bits is refused
  const short = await seal(Buffer.from('xx'), PATH, rcpt(bob)); // 139-byte v2 body (≡ 1 mod 3): last char carries 2 bits
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(short.at(-1)!);
  assert.equal(last % 16, 0);
  const twin = short.slice(0, -1) + alphabet[last + 1];
  assert.deepEqual(bodyOf(twin), bodyOf(short), 'a lenient decoder maps both texts to the same body');
  await refuses(twin, ring(bob), 'corrupt');
});

test('an envelope moved to another path fails', async () => {
  const env = await seal(SECRET, PATH, rcpt(alice));
  const elsewhere = [
    'clusters/prod-eu/secrets/default/db/password',
    'global/secrets/default/db/password2',
    'global/secrets/other/db/password',
    'global/secrets/default/db2/password',
    '/confsync/global/secrets/default/db/password',
    '',
  ];
  for (const path of elsewhere) await refuses(env, ring(alice), 'corrupt', path);
});

test('stanza swap, removal and reorder are detected by every recipient (stanzas are in the AD)', async () => {
  const e1 = bodyOf(await seal(SECRET, PATH, rcpt(alice, bob, carol)));
  const e2 = bodyOf(await seal(SECRET, PATH, rcpt(alice, bob, carol)));
  const stanza = (b: Buffer, i: number) => b.subarray(S + 1 + 88 * i, S + 89 + 88 * i);

  const swapped = Buffer.from(e1);
  stanza(e2, 1).copy(swapped, S + 1 + 88); // bob's stanza from another envelope
  for (const id of [alice, bob, carol]) await refuses(textOf(swapped), ring(id), 'corrupt');

  const stripped = Buffer.concat([e1.subarray(0, S), Buffer.from([2]), e1.subarray(S + 1, S + 1 + 88 * 2), e1.subarray(S + 1 + 88 * 3)]); // drop carol
  for (const id of [alice, bob]) await refuses(textOf(stripped), ring(id), 'corrupt');
  await refuses(textOf(stripped), ring(carol), 'not-a-recipient');

  const reordered = Buffer.concat([e1.subarray(0, S + 1), stanza(e1, 1), stanza(e1, 0), stanza(e1, 2), e1.subarray(S + 1 + 88 * 3)]);
  for (const id of [alice, bob, carol]) await refuses(textOf(reordered), ring(id), 'corrupt');
});

test('versions, plaintext, and wrong recipients', async () => {
  const env = await seal(SECRET, PATH, rcpt(alice));
  await refuses(env.replace(PREFIX, 'confsync:v3:'), ring(alice), 'unsupported-version');
  assert.ok(isEnvelope(env.replace(PREFIX, 'confsync:v3:')));
  for (const plain of ['hunter2', '', 'confsync', 'CONFSYNC:v2:' + env.slice(PREFIX.length)]) {
    assert.equal(isEnvelope(plain), false);
    await refuses(plain, ring(alice), 'not-an-envelope');
  }
  await refuses(env, ring(mallory), 'not-a-recipient');
  await refuses(env, ring(), 'not-a-recipient');
  assert.throws(() => envelopeRecipients('hunter2'), EnvelopeError);
});

test('injected rng: everything but the sealed keys and the tag is reproducible', async () => {
  const rng = () => {
    let call = 0;
    return (n: number) => Buffer.alloc(n, 0x10 + call++);
  };
  const [a, b] = [bodyOf(await seal(SECRET, PATH, rcpt(alice, bob), rng())), bodyOf(await seal(SECRET, PATH, rcpt(alice, bob), rng()))];
  const L = layout(2, SECRET.length);
  assert.equal(a.length, b.length);
  assert.deepEqual(a.subarray(L.nonce, L.ciphertext), Buffer.alloc(24, 0x11), 'second draw is the nonce');
  assert.deepEqual(a.subarray(L.nonce, L.tag), b.subarray(L.nonce, L.tag), 'nonce and ciphertext');
  assert.equal(a[S], b[S], 'count');
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(a.subarray(S + 1 + 88 * i, S + 9 + 88 * i), b.subarray(S + 1 + 88 * i, S + 9 + 88 * i), 'fingerprints');
    assert.notDeepEqual(a.subarray(S + 9 + 88 * i, S + 89 + 88 * i), b.subarray(S + 9 + 88 * i, S + 89 + 88 * i), 'crypto_box_seal is ephemeral');
  }
  assert.notDeepEqual(a.subarray(L.tag), b.subarray(L.tag), 'tag covers the stanzas');
  assert.deepEqual(await open(textOf(b), PATH, ring(bob)), SECRET);
  await assert.rejects(seal(SECRET, PATH, rcpt(alice), (n) => Buffer.alloc(n - 1)), RangeError);
});

test('seal refuses caller mistakes with one-line UserErrors', async () => {
  for (const path of ['/confsync/global/secrets/a/b/c', 'global/configmaps/a/b/c', 'global/secrets/a/b', 'global/secrets/a//c', 'x\ny']) {
    await assert.rejects(seal(SECRET, path, rcpt(alice)), (e: unknown) => e instanceof UserError && !e.message.includes('\n'));
  }
  await assert.rejects(seal(SECRET, PATH, []), UserError);
});

test('identity file: 0600, no silent overwrite, loadKeyring refuses group/other access naming the file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'confsync-id-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'sub', 'identity.key');
  await writeIdentityFile(file, alice);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const text = await readFile(file, 'utf8');
  assert.ok(text.includes(`# recipient: ${recipientOf(alice.publicKey).text}`));
  assert.ok(text.includes(formatSecretKey(alice.privateKey)));

  await assert.rejects(writeIdentityFile(file, bob), (e: unknown) => e instanceof UserError && e.message.includes(file));
  assert.equal(await readFile(file, 'utf8'), text, 'refused write leaves the file alone');
  await writeIdentityFile(file, [bob, carol], { overwrite: true });
  assert.equal((await loadKeyring(file)).size, 2);

  for (const mode of [0o644, 0o640, 0o604, 0o620]) {
    await chmod(file, mode);
    await assert.rejects(loadKeyring(file), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.ok(e.message.includes(file) && e.message.includes(mode.toString(8)), e.message);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
  }
  await chmod(file, 0o400);
  assert.equal((await loadKeyring(file)).size, 2);

  const bad = join(dir, 'bad.key');
  const key = formatSecretKey(alice.privateKey);
  for (const [content, expect] of [
    [`# ok\n${key.slice(0, -1)}X\n`, /line 2: checksum/],
    [`${recipientOf(alice.publicKey).text}\n`, /line 1: not a CONFSYNC-SECRET-KEY/],
    ['# nothing here\n\n', /holds no keys/],
  ] as const) {
    await writeFile(bad, content, { mode: 0o600 });
    await assert.rejects(loadKeyring(bad), (e: unknown) => {
      assert.ok(e instanceof UserError && e.message.includes(bad), String(e));
      assert.match(e.message, expect);
      assert.ok(!e.message.includes(key.slice(25, 50)), 'never echoes key material');
      return true;
    });
  }
  await assert.rejects(loadKeyring(join(dir, 'missing.key')), (e: unknown) => e instanceof UserError && e.message.includes('missing.key'));
});

test('recipients: text form, fingerprint, one-line parse errors', () => {
  const fixed = generateIdentity(() => Uint8Array.from({ length: 32 }, (_, i) => i));
  // known answer computed independently with PyNaCl + hashlib.blake2b(digest_size=32)
  assert.equal(Buffer.from(fixed.publicKey).toString('hex'), '8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f');
  assert.equal(fingerprint(fixed.publicKey), '57addcd56cefb426');
  const r = recipientOf(fixed.publicKey);
  assert.match(r.text, /^confsync1[02-9ac-hj-np-z]{58}$/);
  assert.deepEqual(parseRecipient(`  ${r.text}\n`).publicKey, fixed.publicKey);
  assert.equal(parseRecipient(r.text.toUpperCase()).id, r.id);

  const secret = formatSecretKey(fixed.privateKey);
  const cases: [string, RegExp][] = [
    ['', /not a Bech32/],
    ['age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq', /checksum|confsync1/],
    [r.text.slice(0, -1) + (r.text.endsWith('q') ? 'p' : 'q'), /checksum/],
    [r.text.slice(0, 20), /checksum/],
    [r.text.slice(0, 12) + r.text.slice(12).toUpperCase(), /mixed/],
    [r.text.replace('confsync1', 'confsync1b'), /alphabet/],
    [secret, /SECRET key/],
  ];
  for (const [input, expect] of cases) {
    assert.throws(() => parseRecipient(input), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, expect);
      assert.ok(!e.message.includes('\n') && !e.message.includes(secret));
      return true;
    });
  }
});

// interop with the independent Python implementation: test/envelope-versions.test.ts

test('identity file: group read is refused even for the daemon\'s own group (no fsGroup exception; see test/identity-modes.test.ts)', async () => {
  const { chown } = await import('node:fs/promises');
  const dir = await mkdtemp(join(tmpdir(), 'confsync-fsgroup-'));
  await chmod(dir, 0o755);
  const file = join(dir, 'identity.key');
  await writeIdentityFile(file, generateIdentity());
  const identityModule = fileURLToPath(new URL('../src/envelope/identity.js', import.meta.url));
  const load = (gid: number) =>
    spawnSync(process.execPath, ['--input-type=module', '-e', `import { loadKeyring } from ${JSON.stringify(identityModule)}; await loadKeyring(${JSON.stringify(file)}); console.log('loaded');`], {
      uid: 10001,
      gid,
      encoding: 'utf8',
    });
  try {
    await chown(file, 0, 10001);
    await chmod(file, 0o440);
    assert.match(load(10001).stderr, /has mode 0440: .*chmod 600/, 'root:10001 0440 is refused for gid 10001 too');
    const other = load(10002);
    assert.notEqual(other.status, 0, 'another group is refused (it cannot even open it)');
    await chmod(file, 0o460);
    assert.match(load(10001).stderr, /has mode 0460/, 'group write is never accepted');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
