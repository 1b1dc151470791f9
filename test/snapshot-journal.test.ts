/**
 * The snapshot journal: a write after the first appends only what changed, and a
 * start reads the full snapshot plus its records — through the daemon's own
 * SnapshotWriter, SourceKeys and loadSnapshot on a real dir. A crash mid-append,
 * a tampered or reordered record, a journal left from an older full write: each
 * gives a state etcd had (never a mix), with one warning at most.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { generateIdentity, Keyring } from '../src/envelope/identity.js';
import { createLogger } from '../src/log.js';
import type { Kv, SourceEvent } from '../src/source/types.js';
import { JOURNAL_FILE, loadSnapshot, SnapshotWriter, SourceKeys, type LoadedBase } from '../src/state/snapshot.js';
import { SNAPSHOT_FILE } from '../src/state/location.js';
import { decodeJournal, encodeRecord, journalHeader } from '../src/state/snapshot-journal.js';

const id = generateIdentity();
const expect = { cluster: 'eu', prefix: '/confsync', keyring: new Keyring([id]) };
const P = '/confsync/global/configmaps/default';
const kv = (name: string, value: string, rev: number): Kv => ({ key: `${P}/${name}/k`, value: Buffer.from(value), modRevision: rev });

/** A writer wired as the daemon wires it, over a SourceKeys fed with events; logs captured. */
function setup(dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-journal-')), publicKeys = [id.publicKey]) {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  const keys = new SourceKeys();
  const marks = new Map<string, number>();
  const writes: { full: boolean; bytes: number }[] = [];
  const writer = new SnapshotWriter({
    stateDir: dir,
    cluster: 'eu',
    prefix: '/confsync',
    publicKeys,
    logger,
    take: () => ({ revision: keys.revision, kvs: keys.takeAll(), marks: new Map(marks) }),
    takeChanges: () => {
      const c = keys.takeChanges();
      return c && { revision: keys.revision, ...c, marks: new Map(marks) };
    },
    minIntervalMs: 0,
    onWritten: (_ms, bytes, full) => writes.push({ full, bytes }),
  });
  const feed = async (e: SourceEvent) => {
    keys.note(e);
    writer.changed(keys.revision);
    await writer.flush();
  };
  const load = () => loadSnapshot(dir, expect, logger);
  /** What the daemon does at start: load, and go on with the loaded snapshot's journal when the writer takes it. */
  const restart = async () => {
    let base: LoadedBase | undefined;
    const content = await loadSnapshot(dir, expect, logger, (b) => (base = b));
    assert.ok(content);
    writer.loaded(content.revision);
    for (const [p, v] of content.marks) marks.set(p, v);
    const adopted = base !== undefined && writer.adopt(base);
    if (adopted) keys.seed(content.kvs, content.revision);
    return { content, adopted, base: base as LoadedBase | undefined };
  };
  return { dir, lines, writer, feed, load, restart, writes, marks };
}

const state = (c: { kvs: Kv[]; revision: number } | undefined) => c && { revision: c.revision, kvs: Object.fromEntries(c.kvs.map((k) => [k.key.slice(P.length + 1), k.value.toString()])) };

test('after the first full write, each write appends only its changes; a start reads snapshot + journal to the last state', async () => {
  const s = setup();
  const big = Array.from({ length: 2000 }, (_, i) => kv(`o${i}`, 'x'.repeat(200), i + 1));
  await s.feed({ type: 'snapshot', kvs: big, revision: 2000 } as SourceEvent);
  await s.feed({ type: 'changes', revision: 2001, changes: [{ type: 'put', kv: kv('o1', 'config-value-q8z3', 2001) }] } as SourceEvent);
  s.marks.set('global/secrets/default/db/password', 7);
  await s.feed({ type: 'changes', revision: 2002, changes: [{ type: 'delete', key: `${P}/o2/k` }] } as SourceEvent);
  await s.feed({ type: 'progress', revision: 2010 } as SourceEvent);
  assert.equal(s.writes.length, 3, 'a progress that only moves the revision waits (a minute, or the stop)');
  await s.writer.close();
  assert.deepEqual(s.writes.map((w) => w.full), [true, false, false, false]);
  assert.ok(s.writes[1].bytes < s.writes[0].bytes / 100, `a record of one key is small: ${s.writes[1].bytes} vs ${s.writes[0].bytes} bytes`);
  const got = await s.load();
  assert.equal(got?.revision, 2010);
  assert.equal(got?.kvs.length, 1999);
  assert.equal(state(got)!.kvs['o1/k'], 'config-value-q8z3');
  assert.equal(state(got)!.kvs['o2/k'], undefined);
  assert.equal(got?.marks.get('global/secrets/default/db/password'), 7);
  assert.equal(s.lines.filter((l) => l.includes('"level":40')).length, 0, s.lines.join(''));
  // the config value is sealed in the journal too (no plaintext, no base64 of it), and the file is 0600
  const journal = fs.readFileSync(path.join(s.dir, JOURNAL_FILE));
  assert.ok(!journal.includes(Buffer.from('config-value-q8z3')) && !journal.includes(Buffer.from(Buffer.from('config-value-q8z3').toString('base64').slice(0, 16))));
  assert.equal(fs.statSync(path.join(s.dir, JOURNAL_FILE)).mode & 0o777, 0o600);
});

test('a crash mid-append (partial last record) gives the state of the record before, with one warning; the next write is full', async () => {
  const s = setup();
  await s.feed({ type: 'snapshot', kvs: [kv('a', '1', 1)], revision: 1 } as SourceEvent);
  await s.feed({ type: 'changes', revision: 2, changes: [{ type: 'put', kv: kv('a', '2', 2) }] } as SourceEvent);
  await s.feed({ type: 'changes', revision: 3, changes: [{ type: 'put', kv: kv('b', '3', 3) }] } as SourceEvent);
  await s.writer.close();
  const j = path.join(s.dir, JOURNAL_FILE);
  const whole = fs.readFileSync(j);
  for (const cut of [1, 5, 30]) {
    fs.writeFileSync(j, whole.subarray(0, whole.length - cut));
    s.lines.length = 0;
    const got = await s.load();
    assert.deepEqual(state(got), { revision: 2, kvs: { 'a/k': '2' } }, `cut ${cut}`);
    assert.equal(s.lines.filter((l) => l.includes('a partial record at the end')).length, 1);
  }
  // a new process: its first write is full and the old journal goes
  const t = setup();
  fs.copyFileSync(path.join(s.dir, SNAPSHOT_FILE), path.join(t.dir, SNAPSHOT_FILE));
  fs.writeFileSync(path.join(t.dir, JOURNAL_FILE), whole);
  t.writer.loaded(3);
  await t.feed({ type: 'snapshot', kvs: [kv('a', '2', 2), kv('b', '3', 3), kv('c', '4', 4)], revision: 4 } as SourceEvent);
  await t.writer.close();
  assert.deepEqual(t.writes.map((w) => w.full), [true]);
  assert.ok(!fs.existsSync(path.join(t.dir, JOURNAL_FILE)));
  assert.deepEqual(state(await t.load()), { revision: 4, kvs: { 'a/k': '2', 'b/k': '3', 'c/k': '4' } });
});

test('a re-list makes the next write full: deletions the source never reported one by one are not lost', async () => {
  const s = setup();
  await s.feed({ type: 'snapshot', kvs: [kv('a', '1', 1), kv('b', '1', 2)], revision: 2 } as SourceEvent);
  await s.feed({ type: 'changes', revision: 3, changes: [{ type: 'put', kv: kv('a', '2', 3) }] } as SourceEvent);
  await s.feed({ type: 'snapshot', kvs: [kv('a', '2', 3)], revision: 9 } as SourceEvent);
  await s.writer.close();
  assert.deepEqual(s.writes.map((w) => w.full), [true, false, true]);
  assert.deepEqual(state(await s.load()), { revision: 9, kvs: { 'a/k': '2' } });
});

test('a tampered, reordered or foreign record is never applied: the state stops at the record before', async () => {
  const s = setup();
  await s.feed({ type: 'snapshot', kvs: [kv('a', '1', 1)], revision: 1 } as SourceEvent);
  for (let r = 2; r <= 4; r++) await s.feed({ type: 'changes', revision: r, changes: [{ type: 'put', kv: kv('a', String(r), r) }] } as SourceEvent);
  await s.writer.close();
  const j = path.join(s.dir, JOURNAL_FILE);
  const whole = fs.readFileSync(j);
  // records: header, then three; find their offsets
  const offs: number[] = [];
  for (let off = journalHeader('0'.repeat(32)).length; off < whole.length; off += 4 + whole.readUInt32BE(off)) offs.push(off);
  assert.equal(offs.length, 3);
  // a flipped byte in record 1 (the second): state of record 0 (revision 2)
  const flipped = Buffer.from(whole);
  flipped[offs[1] + 40] ^= 1;
  fs.writeFileSync(j, flipped);
  s.lines.length = 0;
  assert.deepEqual(state(await s.load()), { revision: 2, kvs: { 'a/k': '2' } });
  assert.equal(s.lines.filter((l) => l.includes('record 1 does not authenticate')).length, 1);
  // records 1 and 2 swapped: record 2 at index 1 fails (its index is authenticated)
  const swapped = Buffer.concat([whole.subarray(0, offs[1]), whole.subarray(offs[2]), whole.subarray(offs[1], offs[2])]);
  fs.writeFileSync(j, swapped);
  assert.deepEqual(state(await s.load()), { revision: 2, kvs: { 'a/k': '2' } });
  // a journal of another full write (its id differs): ignored whole, no warning
  const other = Buffer.concat([journalHeader('ab'.repeat(16)), encodeRecord({ revision: 99, put: [kv('a', 'evil', 99)], del: [], marks: new Map() }, new Uint8Array(32), 'ab'.repeat(16), 0)]);
  fs.writeFileSync(j, other);
  s.lines.length = 0;
  assert.deepEqual(state(await s.load()), { revision: 1, kvs: { 'a/k': '1' } });
  assert.equal(s.lines.filter((l) => l.includes('"level":40')).length, 0);
  // and decodeJournal says why it stopped, in one line
  const read = decodeJournal(flipped, new Uint8Array(32), 'ff'.repeat(16));
  assert.equal(read.matches, false);
});

test('the journal is replaced by a full write once it outgrows half the snapshot (and 1 MiB)', async () => {
  const s = setup();
  const objs = Array.from({ length: 3000 }, (_, i) => kv(`o${i}`, 'v'.repeat(500), i + 1));
  await s.feed({ type: 'snapshot', kvs: objs, revision: 3000 } as SourceEvent);
  let rev = 3000;
  // each round rewrites 400 objects (~270 KiB of record): the journal passes half the ~2 MiB snapshot after a few
  for (let round = 0; round < 8; round++) {
    const changes = Array.from({ length: 400 }, (_, i) => ({ type: 'put' as const, kv: kv(`o${(round * 400 + i) % 3000}`, `r${round}`.padEnd(500, 'w'), ++rev) }));
    await s.feed({ type: 'changes', revision: rev, changes } as SourceEvent);
  }
  await s.writer.close();
  const fulls = s.writes.filter((w) => w.full).length;
  assert.ok(fulls >= 2 && fulls < s.writes.length, `full writes ${fulls} of ${s.writes.length}`);
  const got = await s.load();
  assert.equal(got?.revision, rev);
  assert.equal(got?.kvs.length, 3000);
  assert.equal(state(got)!.kvs['o0/k'].slice(0, 2), 'r7');
});

test('a restart goes on with the journal it loaded: its catch-up is one record, an unchanged start writes nothing; after an identity change or a bad record the next write is full', async () => {
  const first = setup();
  const big = Array.from({ length: 2000 }, (_, i) => kv(`o${i}`, 'x'.repeat(200), i + 1));
  await first.feed({ type: 'snapshot', kvs: big, revision: 2000 } as SourceEvent);
  await first.feed({ type: 'changes', revision: 2001, changes: [{ type: 'put', kv: kv('o1', 'one', 2001) }] } as SourceEvent);
  await first.writer.close();
  assert.deepEqual(first.writes.map((w) => w.full), [true, false]);
  const snapshotBytes = fs.readFileSync(path.join(first.dir, SNAPSHOT_FILE));

  // Restart 1: the source serves the loaded state offline (etcd down), then resumes after a
  // catch-up of one put and one delete: one record, appended after the one already there.
  const second = setup(first.dir);
  const r = await second.restart();
  assert.equal(r.adopted, true);
  assert.equal(r.base!.records, 1);
  assert.ok(r.base!.fileKey.every((b) => b === 0), 'the loader\'s copy of the file key is zeroed once the writer took it');
  await second.feed({ type: 'snapshot', kvs: r.content.kvs, revision: r.content.revision, offline: true } as SourceEvent);
  assert.equal(second.writes.length, 0, 'the offline snapshot is the loaded state: nothing to write');
  const caughtUp = r.content.kvs.filter((k) => k.key !== `${P}/o2/k`).map((k) => (k.key === `${P}/o3/k` ? kv('o3', 'three', 2003) : k));
  await second.feed({ type: 'snapshot', kvs: caughtUp, revision: 2003, resumed: true } as SourceEvent);
  await second.writer.close();
  assert.deepEqual(second.writes.map((w) => w.full), [false], 'the catch-up is a record, not a full write');
  assert.ok(second.writes[0]!.bytes < 2000, `one record: ${second.writes[0]!.bytes} bytes`);
  assert.ok(fs.readFileSync(path.join(first.dir, SNAPSHOT_FILE)).equals(snapshotBytes), 'the full snapshot file was not rewritten');
  const got = await second.load();
  assert.equal(got?.revision, 2003);
  assert.equal(got?.kvs.length, 1999);
  assert.equal(state(got)!.kvs['o1/k'], 'one');
  assert.equal(state(got)!.kvs['o2/k'], undefined);
  assert.equal(state(got)!.kvs['o3/k'], 'three');
  assert.equal(first.lines.concat(second.lines).filter((l) => l.includes('"level":40')).length, 0);

  // Restart 2, nothing changed in etcd: nothing is written, at the resume or at the stop.
  const third = setup(first.dir);
  const r3 = await third.restart();
  await third.feed({ type: 'snapshot', kvs: r3.content.kvs, revision: r3.content.revision, resumed: true } as SourceEvent);
  await third.writer.close();
  assert.equal(third.writes.length, 0, 'an unchanged restart wrote something');

  // Restart 3 with a second public key in the identity: the file key is not sealed to it, so the next write is full (to both).
  const other = generateIdentity();
  const fourth = setup(first.dir, [id.publicKey, other.publicKey]);
  const r4 = await fourth.restart();
  assert.equal(r4.adopted, false);
  await fourth.feed({ type: 'snapshot', kvs: [...r4.content.kvs, kv('new', 'n', 2004)], revision: 2004, resumed: true } as SourceEvent);
  await fourth.writer.close();
  assert.deepEqual(fourth.writes.map((w) => w.full), [true]);
  assert.ok(!fs.existsSync(path.join(first.dir, JOURNAL_FILE)), 'the full write removed the old journal');
  assert.equal((await fourth.load())?.kvs.length, 2000);

  // A journal with a bad record at its end cannot take more records: not handed on, the next write is full.
  const fifth = setup(first.dir, [id.publicKey, other.publicKey]);
  await fifth.restart();
  await fifth.feed({ type: 'changes', revision: 2005, changes: [{ type: 'put', kv: kv('o4', 'four', 2005) }] } as SourceEvent);
  await fifth.writer.close();
  assert.deepEqual(fifth.writes.map((w) => w.full), [false]);
  const j = path.join(first.dir, JOURNAL_FILE);
  fs.appendFileSync(j, Buffer.from([0, 0, 0, 9, 1, 2]));
  const sixth = setup(first.dir, [id.publicKey, other.publicKey]);
  const r6 = await sixth.restart();
  assert.equal(r6.base, undefined);
  assert.equal(r6.adopted, false);
  await sixth.feed({ type: 'snapshot', kvs: r6.content.kvs, revision: 2006, resumed: true } as SourceEvent);
  await sixth.writer.close();
  assert.deepEqual(sixth.writes.map((w) => w.full), [true]);
  assert.equal(state(await sixth.load())!.kvs['o4/k'], 'four');
});
