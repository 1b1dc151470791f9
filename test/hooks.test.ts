import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { configSchema } from '../src/config/schema.js';
import type { DesiredObject } from '../src/desired/types.js';
import type { ObjectKind } from '../src/keyspace.js';
import { Hooks } from '../src/reactions/hooks.js';
import { createLogger } from '../src/log.js';
import { readOr, until } from './harness/daemon.js';

/**
 * Real processes, real files: a temp dir, Hooks built through the real schema (so the
 * defaults are the shipped ones), and the logger's lines parsed for assertions.
 */
function setup(hooks: (dir: string) => unknown[]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-hooks-'));
  const lines: Record<string, any>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  const h = new Hooks(configSchema.shape.hooks.parse(hooks(dir)), createLogger('debug', stream));
  return {
    dir,
    h,
    out: path.join(dir, 'out'),
    warns: () => lines.filter((l) => l.level === 40),
    cleanup: async () => (await h.close(), fs.rmSync(dir, { recursive: true, force: true })),
  };
}

function obj(id: string): DesiredObject {
  const [kind, namespace, name] = id.split('/') as [ObjectKind, string, string];
  return { id, kind, namespace, name, data: new Map(), labels: {}, annotations: {}, revision: 1, hash: id };
}

const appendObjects = (file: string) => ['/bin/sh', '-c', `echo "$CONFSYNC_OBJECTS" >> '${file}'`];
const outLines = (file: string) => (readOr(file) ?? '').split('\n').filter(Boolean);

test('a burst of 20 writes within the window → one run listing them (sorted, unique); other objects and other sinks do not fire', async () => {
  const t = setup((dir) => [{ objects: ['configmaps/default/app-*'], command: appendObjects(path.join(dir, 'out')), debounceMs: 150 }]);
  try {
    const ids = Array.from({ length: 20 }, (_, i) => `configmaps/default/app-${String(i).padStart(2, '0')}`);
    for (const id of [...ids].reverse()) t.h.observe({ type: 'written', sink: 'files', object: obj(id) });
    t.h.observe({ type: 'written', sink: 'files', object: obj(ids[3]!) }); // a repeat: listed once
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/other') });
    t.h.observe({ type: 'written', sink: 'kubernetes', object: obj('configmaps/default/app-99') });
    t.h.observe({ type: 'removed', sink: 'kubernetes', id: 'configmaps/default/app-98' });
    await until(() => outLines(t.out).length > 0, 'hook output');
    await sleep(400); // longer than the window: a second run would have started by now
    assert.deepEqual(outLines(t.out), [ids.join(' ')]);
    assert.deepEqual(t.h.counters, { runs: [1], failures: [0] });
  } finally {
    await t.cleanup();
  }
});

test('glob secrets/default/* matches secrets/default/db, not secrets/other/db; removal fires', async () => {
  const t = setup((dir) => [{ objects: ['secrets/default/*'], command: appendObjects(path.join(dir, 'out')), debounceMs: 20 }]);
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('secrets/other/db') });
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/db') });
    await sleep(300);
    assert.equal(readOr(t.out), undefined, 'no run for objects outside the glob');
    t.h.observe({ type: 'written', sink: 'files', object: obj('secrets/default/db') });
    await until(() => outLines(t.out).length === 1, 'run for the matching secret');
    t.h.observe({ type: 'removed', sink: 'files', id: 'secrets/default/gone' });
    await until(() => outLines(t.out).length === 2, 'run for the removal');
    assert.deepEqual(outLines(t.out), ['secrets/default/db', 'secrets/default/gone']);
  } finally {
    await t.cleanup();
  }
});

test('events during a slow run → exactly one more run after it, never two at once', async () => {
  // The lock file detects overlap from inside the hook itself.
  const t = setup((dir) => {
    const [out, lock] = [path.join(dir, 'out'), path.join(dir, 'lock')];
    const script = `if [ -e '${lock}' ]; then echo OVERLAP >> '${out}'; fi; touch '${lock}'; echo "start $CONFSYNC_OBJECTS" >> '${out}'; sleep 0.3; rm '${lock}'; echo end >> '${out}'`;
    return [{ objects: ['configmaps/*'], command: ['/bin/sh', '-c', script], debounceMs: 20 }];
  });
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    await until(() => outLines(t.out).includes('start configmaps/default/a'), 'first run started');
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/c') });
    await sleep(100);
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/b') });
    t.h.observe({ type: 'removed', sink: 'files', id: 'configmaps/default/c' });
    await until(() => outLines(t.out).filter((l) => l === 'end').length === 2, 'second run finished', 5000);
    await sleep(300);
    assert.deepEqual(outLines(t.out), ['start configmaps/default/a', 'end', 'start configmaps/default/b configmaps/default/c', 'end']);
    assert.deepEqual(t.h.counters.runs, [2]);
  } finally {
    await t.cleanup();
  }
});

test('exit 3 and a missing binary → warn with hook index, argv[0], code and stderr; later hooks still fire, and so do the failed ones next time', async () => {
  let missing = '';
  const t = setup((dir) => {
    missing = path.join(dir, 'no-such-binary');
    return [
      { objects: ['*'], command: ['/bin/sh', '-c', 'echo boom >&2; exit 3'], debounceMs: 10 },
      { objects: ['*'], command: [missing, 'arg'], debounceMs: 10 },
      { objects: ['*'], command: appendObjects(path.join(dir, 'out')), debounceMs: 10 },
    ];
  });
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    await until(() => outLines(t.out).length === 1 && t.warns().length === 2, 'two warnings and the third hook');
    const warns = t.warns().sort((a, b) => a.hook - b.hook);
    assert.deepEqual([warns[0]!.hook, warns[0]!.command, warns[0]!.code, warns[0]!.stderr], [0, '/bin/sh', 3, 'boom']);
    assert.deepEqual([warns[1]!.hook, warns[1]!.command], [1, missing]);
    assert.match(warns[1]!.err, /ENOENT/);
    assert.deepEqual(t.h.counters, { runs: [1, 1, 1], failures: [1, 1, 0] });

    t.h.observe({ type: 'removed', sink: 'files', id: 'configmaps/default/a' });
    await until(() => outLines(t.out).length === 2 && t.warns().length === 4, 'second round');
    assert.deepEqual(t.h.counters, { runs: [2, 2, 2], failures: [2, 2, 0] });
  } finally {
    await t.cleanup();
  }
});

test('a hook past its timeout is killed (SIGTERM) and reported', async () => {
  const t = setup(() => [{ objects: ['*'], command: ['sleep', '10'], debounceMs: 0, timeoutSeconds: 0.5 }]);
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    // 4 s: past the 0.5 s timeout, well before sleep 10 would end on its own.
    const [warn] = await until(() => t.warns().length > 0 && t.warns(), 'timeout warning', 4000);
    assert.deepEqual([warn!.hook, warn!.command, warn!.signal, warn!.timedOutAfterSeconds], [0, 'sleep', 'SIGTERM', 0.5]);
    assert.deepEqual(t.h.counters, { runs: [1], failures: [1] });
  } finally {
    await t.cleanup();
  }
});

test('a timeout kills what the hook started too (its process group), not just the hook', async () => {
  const t = setup((dir) => [{ objects: ['*'], command: ['/bin/sh', '-c', `sleep 10 & echo $! > '${path.join(dir, 'grandchild')}'; wait`], debounceMs: 0, timeoutSeconds: 0.3 }]);
  // Linux: a killed process whose parent died may linger as a zombie until reaped; that counts as gone.
  const alive = (pid: string) => !/^\d+ \(.*\) [ZX]/.test(readOr(`/proc/${pid}/stat`) ?? '0 (x) X');
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    await until(() => t.warns().length > 0, 'timeout warning', 4000);
    const pid = readOr(path.join(t.dir, 'grandchild'))!.trim();
    await until(() => !alive(pid), 'the backgrounded sleep killed', 2000);
  } finally {
    await t.cleanup();
  }
});

test('close() drops a pending run and waits for a running one; nothing runs after it', async () => {
  const pending = setup((dir) => [{ objects: ['*'], command: appendObjects(path.join(dir, 'out')), debounceMs: 100 }]);
  const running = setup((dir) => [{ objects: ['*'], command: ['/bin/sh', '-c', `sleep 0.3; echo done >> '${path.join(dir, 'out')}'`], debounceMs: 0 }]);
  try {
    pending.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    await pending.h.close();
    await sleep(200);
    assert.equal(readOr(pending.out), undefined, 'the pending run was dropped');

    running.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/a') });
    await until(() => running.h.counters.runs[0] === 1, 'run started');
    await running.h.close();
    assert.deepEqual(outLines(running.out), ['done'], 'close waited for the running command');
    running.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/b') });
    await sleep(100);
    assert.deepEqual(running.h.counters.runs, [1]);
  } finally {
    await pending.cleanup();
    await running.cleanup();
  }
});

test('signal hook: the process named by the pid file gets the signal', async () => {
  const t = setup((dir) => [{ objects: ['configmaps/default/app'], signal: { pidFile: path.join(dir, 'app.pid') }, debounceMs: 10 }]);
  const script = `process.on('SIGHUP', () => require('fs').appendFileSync(${JSON.stringify(t.out)}, 'hup\\n')); console.log('ready'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise((r) => child.stdout!.once('data', r)); // the handler is installed
    fs.writeFileSync(path.join(t.dir, 'app.pid'), `${child.pid}\n`);
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/app') });
    await until(() => outLines(t.out).includes('hup'), 'SIGHUP handler ran');
    assert.deepEqual(t.h.counters, { runs: [1], failures: [0] });
  } finally {
    child.kill('SIGKILL');
    await t.cleanup();
  }
});

test('signal hook: missing pid file, garbage or 0 in it, or a dead pid → warn naming the file', async () => {
  const dead = spawn('true');
  await new Promise((r) => dead.once('exit', r));
  const names = ['missing', 'garbage', 'zero', 'dead'];
  const t = setup((dir) => names.map((n) => ({ objects: ['*'], signal: { pidFile: path.join(dir, `${n}.pid`) }, debounceMs: 0 })));
  const file = (n: string) => path.join(t.dir, `${n}.pid`);
  fs.writeFileSync(file('garbage'), 'not a pid\n');
  fs.writeFileSync(file('zero'), '0\n'); // 0 would signal our own process group
  fs.writeFileSync(file('dead'), String(dead.pid));
  try {
    t.h.observe({ type: 'written', sink: 'files', object: obj('configmaps/default/app') });
    await until(() => t.warns().length === 4, 'four warnings');
    const byFile = new Map(t.warns().map((l) => [l.pidFile, l.err]));
    assert.match(byFile.get(file('missing')), /ENOENT/);
    assert.match(byFile.get(file('garbage')), /positive integer/);
    assert.match(byFile.get(file('zero')), /positive integer/);
    assert.match(byFile.get(file('dead')), /ESRCH/);
    assert.deepEqual(t.h.counters.failures, [1, 1, 1, 1]);
  } finally {
    await t.cleanup();
  }
});
