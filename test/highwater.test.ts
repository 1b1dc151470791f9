/**
 * The replay high-water store on real temp dirs: modes, atomic debounced writes,
 * reload, and the two failure modes (unparseable file, unusable dir) that must
 * cost one warning line and never the daemon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../src/log.js';
import { HIGHWATER_FILE, HighWater, parseMarks } from '../src/state/highwater.js';
import { isInside, stateDirToRead } from '../src/state/location.js';

const P = 'global/secrets/default/db/password';

function capture() {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  return { logger, lines };
}

function tmp(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-hw-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('marks persist across a reload: dir 0700, file 0600, raised only upwards', async (t) => {
  const stateDir = path.join(tmp(t), 'a', 'state');
  const { logger, lines } = capture();
  const hw = await HighWater.load(stateDir, logger);
  assert.equal((fs.statSync(stateDir).mode & 0o777).toString(8), '700');
  hw.accept(P, 1000);
  hw.accept(P, 500);
  hw.accept('clusters/eu/secrets/x/y/z', 7);
  assert.equal(hw.mark(P), 1000);
  await hw.close();
  const file = path.join(stateDir, HIGHWATER_FILE);
  assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { format: 1, marks: { [P]: 1000, 'clusters/eu/secrets/x/y/z': 7 } });
  assert.deepEqual(fs.readdirSync(stateDir), [HIGHWATER_FILE], 'no temp file left');

  const again = await HighWater.load(stateDir, logger);
  assert.equal(again.mark(P), 1000);
  assert.equal(again.mark('global/secrets/default/db/other'), 0);
  assert.equal(again.size, 2);
  assert.deepEqual(lines, []);
});

test('writes are debounced: a burst of accepts is one write, on its own within ~500 ms', async (t) => {
  const stateDir = tmp(t);
  const file = path.join(stateDir, HIGHWATER_FILE);
  const hw = await HighWater.load(stateDir, capture().logger);
  for (let i = 1; i <= 1000; i++) hw.accept(`global/secrets/ns/o/k${i % 10}`, i);
  assert.equal(fs.existsSync(file), false, 'nothing written synchronously');
  await sleep(900);
  const first = fs.statSync(file);
  assert.equal(parseMarks(fs.readFileSync(file, 'utf8'))!.get('global/secrets/ns/o/k0'), 1000);
  hw.accept(P, 5); // a later raise is written again
  await hw.close();
  assert.ok(fs.statSync(file).ino !== first.ino, 'replaced by rename, not rewritten in place');
  assert.equal(parseMarks(fs.readFileSync(file, 'utf8'))!.get(P), 5);
});

test('an unparseable file: one warning line, moved aside, treated as empty, rewritten on the next accept', async (t) => {
  const stateDir = tmp(t);
  const file = path.join(stateDir, HIGHWATER_FILE);
  for (const bad of ['{"format":1,"marks":{"a":1', '[]', '{"format":2,"marks":{}}', `{"format":1,"marks":{"${P}":-1}}`, `{"format":1,"marks":{"${P}":"1"}}`, '\u0000\u0001']) {
    fs.writeFileSync(file, bad);
    const { logger, lines } = capture();
    const hw = await HighWater.load(stateDir, logger);
    assert.equal(hw.size, 0, bad);
    assert.equal(lines.length, 1, bad);
    assert.equal(JSON.parse(lines[0]!).level, 40, 'a warning');
    assert.match(lines[0]!, /does not parse \(moved to highwater\.json\.bad\); starting without marks/);
    assert.ok(!lines[0]!.includes('\\n'));
    assert.equal(fs.readFileSync(`${file}.bad`, 'latin1'), bad, 'kept for inspection');
    hw.accept(P, 3);
    await hw.close();
    assert.equal(parseMarks(fs.readFileSync(file, 'utf8'))!.get(P), 3);
  }
});

test('a state dir that cannot be created or written: one warning, marks in memory, nothing thrown', async (t) => {
  const base = tmp(t);
  const blocker = path.join(base, 'not-a-dir');
  fs.writeFileSync(blocker, '');
  const { logger, lines } = capture();
  const hw = await HighWater.load(path.join(blocker, 'state'), logger);
  hw.accept(P, 9);
  assert.equal(hw.mark(P), 9, 'protection still works in this process');
  await hw.close();
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /state dir cannot be created; replay high-water marks kept in memory only/);

  // A dir that exists but refuses the write (a file squats on the temp name's dir entry: rename onto a dir fails).
  const stateDir = path.join(base, 'state');
  const w = capture();
  const hw2 = await HighWater.load(stateDir, w.logger);
  fs.mkdirSync(path.join(stateDir, HIGHWATER_FILE)); // rename(tmp, <a dir>) fails with EISDIR
  hw2.accept(P, 1);
  await hw2.flush();
  hw2.accept(P, 2);
  await hw2.flush();
  assert.equal(w.lines.length, 1, 'warned once, not per attempt');
  assert.match(w.lines[0]!, /cannot be written; kept in memory/);
  assert.deepEqual(fs.readdirSync(stateDir), [HIGHWATER_FILE], 'temp file removed');
  fs.rmdirSync(path.join(stateDir, HIGHWATER_FILE));
  await hw2.close();
  assert.equal(parseMarks(fs.readFileSync(path.join(stateDir, HIGHWATER_FILE), 'utf8'))!.get(P), 2, 'retried and written once possible');
  assert.match(w.lines[1]!, /written again/);
});

test('moving from the old default stateDir: read there once when the new default holds no state, written to the new one; other stateDirs never redirected', async (t) => {
  const base = tmp(t);
  const current = path.join(base, 'confsync-state');
  const old = path.join(base, 'confsync'); // the files root that used to be the default
  fs.mkdirSync(old);
  fs.writeFileSync(path.join(old, HIGHWATER_FILE), JSON.stringify({ format: 1, marks: { [P]: 7 } }), { mode: 0o600 });
  const dirs = { current, old };
  const w = capture();

  // Another stateDir (set explicitly): read where it says, never from the old default.
  assert.equal(await stateDirToRead(path.join(base, 'mine'), w.logger, dirs), path.join(base, 'mine'));
  assert.equal(w.lines.length, 0);

  // The default, empty: the old default's state is read, once, and said so.
  const from = await stateDirToRead(current, w.logger, dirs);
  assert.equal(from, old);
  assert.match(w.lines.join(''), /state found at the old default stateDir .*confsync \(the files root\): read from there this once/);
  const hw = await HighWater.load(current, w.logger, from);
  assert.equal(hw.mark(P), 7);
  assert.equal(parseMarks(fs.readFileSync(path.join(current, HIGHWATER_FILE), 'utf8'))!.get(P), 7, 'written to the new dir at once');
  assert.ok(fs.existsSync(path.join(old, HIGHWATER_FILE)), 'the old file is left for the operator');
  await hw.close();

  // Next start: the new dir holds state; the old one is not read again.
  fs.writeFileSync(path.join(old, HIGHWATER_FILE), JSON.stringify({ format: 1, marks: { [P]: 9 } }));
  assert.equal(await stateDirToRead(current, w.logger, dirs), current);
  assert.equal((await HighWater.load(current, w.logger)).mark(P), 7);
});

test('isInside: a stateDir in (or equal to) a files root is told apart from a sibling', () => {
  assert.equal(isInside('/var/lib/confsync', '/var/lib/confsync'), true);
  assert.equal(isInside('/var/lib/confsync/state', '/var/lib/confsync/'), true);
  assert.equal(isInside('/var/lib/confsync-state', '/var/lib/confsync'), false);
  assert.equal(isInside('/var/lib/confsync/../confsync-state', '/var/lib/confsync'), false);
});
