/**
 * The local snapshot's file format (pure): round trip, multi-chunk bodies, key
 * rotation, and every way a file must fail to open — each with one short reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity, Keyring } from '../src/envelope/identity.js';
import { decodeSnapshot, encodeSnapshot, encodeSnapshotAsync, SnapshotUnusable, writeSnapshotAsync, type SnapshotContent } from '../src/state/snapshot-format.js';

const a = generateIdentity();
const b = generateIdentity();
const content = (n = 3, valueBytes = 20): SnapshotContent => ({
  cluster: 'eu',
  prefix: '/confsync',
  revision: 42,
  savedAt: '2026-12-05T00:00:00.000Z',
  kvs: Array.from({ length: n }, (_, i) => ({ key: `/confsync/global/configmaps/default/o${i}/k`, value: Buffer.alloc(valueBytes, i % 251), modRevision: i + 1 })),
  marks: new Map([['global/secrets/default/db/password', 1796395200000]]),
});
const expect = (keyring = new Keyring([a])) => ({ cluster: 'eu', prefix: '/confsync', keyring });
const reason = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SnapshotUnusable, `not a SnapshotUnusable: ${(err as Error).stack}`);
    assert.ok(!err.message.includes('\n'));
    return err.message;
  }
  assert.fail('opened');
};

test('round trip, also a body of several chunks and binary values', () => {
  for (const c of [content(), content(3000, 700)]) {
    const out = decodeSnapshot(encodeSnapshot(c, [a.publicKey]), expect());
    assert.equal(out.revision, 42);
    assert.equal(out.cluster, 'eu');
    assert.deepEqual(out.kvs, c.kvs);
    assert.deepEqual(out.marks, c.marks);
  }
});

test('written in pieces: no piece over one sealed chunk, the pieces in order are the file, the count is its length', async () => {
  const c = content(6000, 700); // ~5 MiB of body: several chunks
  const pieces: Buffer[] = [];
  const bytes = await writeSnapshotAsync(c, [a.publicKey], {}, async (b) => void pieces.push(Buffer.from(b)));
  const file = Buffer.concat(pieces);
  assert.equal(bytes, file.length);
  assert.ok(file.length > 4 << 20, 'the body spans chunks');
  assert.ok(Math.max(...pieces.map((p) => p.length)) <= (1 << 20) + 17, 'never a piece larger than one sealed chunk');
  const out = decodeSnapshot(file, expect());
  assert.deepEqual(out.kvs, c.kvs);
  assert.deepEqual(out.marks, c.marks);
});

test('keys with multi-byte UTF-8 (an invalid key etcd holds is saved as it is) open the same when a character straddles two chunks', () => {
  // Keys of 3-byte characters in a body over 1 MiB, shifted by 0, 1 and 2 bytes: the chunk
  // boundary falls inside a character in at least one of them.
  for (const shift of ['', 'x', 'xy']) {
    const kvs = Array.from({ length: 2000 }, (_, i) => ({ key: `/confsync/global/${shift}${'€'.repeat(200)}-${String(i).padStart(4, '0')}`, value: Buffer.from([i % 256, 0xff, 0]), modRevision: i + 1 }));
    assert.ok(Buffer.byteLength(JSON.stringify(kvs.map((k) => k.key))) > 1 << 20, 'the body spans chunks');
    const out = decodeSnapshot(encodeSnapshot({ ...content(), kvs }, [a.publicKey]), expect());
    assert.deepEqual(out.kvs, kvs, `shift ${shift.length}`);
  }
});

test('the sliced encode (event loop free between slices): opens to the same content, a changed key encoded anew', async () => {
  const c = content(5000, 300); // several slices and several chunks
  const first = decodeSnapshot(await encodeSnapshotAsync(c, [a.publicKey]), expect());
  assert.deepEqual(first.kvs, c.kvs);
  // A put replaces the Kv object (state/snapshot.ts SourceKeys): the next full write carries the new value.
  c.kvs[4321] = { key: c.kvs[4321]!.key, value: Buffer.from('changed'), modRevision: 99 };
  c.kvs.pop();
  const again = decodeSnapshot(await encodeSnapshotAsync(c, [a.publicKey]), expect());
  assert.deepEqual(again.kvs, c.kvs);
  assert.deepEqual(again.marks, c.marks);
  // Turns of the event loop happened during the encode.
  let turns = 0;
  const tick = setInterval(() => turns++, 0);
  await encodeSnapshotAsync(content(20_000, 64), [a.publicKey]);
  clearInterval(tick);
  assert.ok(turns > 0, 'the loop ran during the encode');
});

test('sealed to every key of the identity: a keyring holding only one of them opens it (rotation)', () => {
  const file = encodeSnapshot(content(), [a.publicKey, b.publicKey]);
  assert.equal(decodeSnapshot(file, expect(new Keyring([b]))).kvs.length, 3);
});

test('no plaintext value in the file', () => {
  const c = content();
  c.kvs[0]!.value = Buffer.from('a-config-value-7f3e');
  assert.ok(!encodeSnapshot(c, [a.publicKey]).includes(Buffer.from('a-config-value-7f3e')));
});

test('refused with one reason: other cluster or prefix, wrong identity, tampering anywhere, truncation, trailing bytes', () => {
  const file = encodeSnapshot(content(3000, 700), [a.publicKey]);
  assert.match(reason(() => decodeSnapshot(file, { ...expect(), cluster: 'us' })), /written for cluster "eu" prefix "\/confsync", not this daemon's cluster "us"/);
  assert.match(reason(() => decodeSnapshot(file, { ...expect(), prefix: '/other' })), /not this daemon's cluster "eu" prefix "\/other"/);
  assert.match(reason(() => decodeSnapshot(file, expect(new Keyring([b])))), /sealed to none of the keys/);
  // The header is authenticated: a revision edited in place (same length) fails.
  const edited = Buffer.from(file.toString('latin1').replace('"revision":42', '"revision":43'), 'latin1');
  assert.match(reason(() => decodeSnapshot(edited, expect())), /does not authenticate/);
  for (const at of [file.length - 1, file.length - 30_000, Math.floor(file.length / 2)]) {
    const t = Buffer.from(file);
    t[at]! ^= 0x01;
    assert.ok(reason(() => decodeSnapshot(t, expect())));
  }
  assert.match(reason(() => decodeSnapshot(file.subarray(0, file.length - 100), expect())), /truncated/);
  assert.match(reason(() => decodeSnapshot(Buffer.concat([file, Buffer.from([0])]), expect())), /after the final chunk|truncated/);
  assert.match(reason(() => decodeSnapshot(Buffer.from('{"format":1}'), expect())), /not a confsync snapshot/);
  // A multi-chunk body cut at a chunk boundary has no FINAL chunk.
  const firstChunkEnd = (() => {
    const hlen = file.readUInt32BE(21);
    const off = 21 + 4 + hlen + 24;
    return off + 4 + file.readUInt32BE(off);
  })();
  assert.match(reason(() => decodeSnapshot(file.subarray(0, firstChunkEnd), expect())), /no final chunk/);
});
