/**
 * The renderer's write path on real files and real processes (render/renderer.ts,
 * render/write.ts), fed a desired state built in memory: a check that times out
 * keeps the old file; identical output writes and reloads nothing; mode, owner and
 * group are set on the file that goes live; a reload that fails is reported with
 * the new file in place; a hand edit is put back by the deep resync's recheck.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseConfig } from '../src/config/load.js';
import type { DesiredObject } from '../src/desired/types.js';
import { createLogger } from '../src/log.js';
import { prepareTemplates } from '../src/render/load.js';
import { Renderer } from '../src/render/renderer.js';
import { readOr, until } from './harness/daemon.js';

function setup(template: Record<string, unknown>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-tplw-'));
  fs.writeFileSync(path.join(dir, 't.liquid'), 'v={{ configmaps["default/app"].keys.v }}\n');
  const cfg = parseConfig({ cluster: 'eu', templates: [{ name: 't', source: path.join(dir, 't.liquid'), dest: path.join(dir, 'out', 't.conf'), ...template }] }, 'test', {}, {});
  const logs: Record<string, any>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) logs.push(JSON.parse(l));
      cb();
    },
  });
  const objects = new Map<string, DesiredObject>();
  const r = new Renderer(prepareTemplates(cfg), {
    prefix: '/confsync',
    cluster: 'eu',
    labels: {},
    logger: createLogger('debug', stream),
    source: { desired: () => objects, template: () => undefined, synced: () => true },
  });
  /** Set default/app's `v` and let the loop reach an idle point, as the reconciler does. */
  const set = (v: string) => {
    const id = 'configmaps/default/app';
    objects.set(id, { id, kind: 'configmaps', namespace: 'default', name: 'app', data: new Map([['v', Buffer.from(v)]]), labels: {}, annotations: {}, revision: 1, hash: v });
    r.observe({ type: 'desired', id });
    r.observe({ type: 'idle', applied: 1 });
  };
  const counts = () => r.counters.get('t')!;
  const recheck = () => (r.recheck(), r.observe({ type: 'idle', applied: 1 }));
  return { dir, dest: path.join(dir, 'out', 't.conf'), set, counts, recheck, logs, cleanup: async () => (await r.close(), fs.rmSync(dir, { recursive: true, force: true })) };
}

test('a check past its timeout keeps the old file and says so; the next good value goes live', async () => {
  const t = setup({ check: ['/bin/sh', '-c', 'grep -q slow "$CONFSYNC_RENDERED_FILE" && exec sleep 10; exit 0'], checkTimeoutSeconds: 0.2 });
  try {
    t.set('one');
    await until(() => readOr(t.dest) === 'v=one\n', 'first file');
    t.set('slow');
    await until(() => t.counts().failed === 1, 'the timed-out check');
    assert.equal(readOr(t.dest), 'v=one\n');
    assert.match(t.logs.find((l) => l.template === 't' && l.level === 40)!.err, /^check \/bin\/sh refused the new file \(timed out after 0\.2 s/);
    assert.deepEqual(fs.readdirSync(path.dirname(t.dest)), ['t.conf'], 'no temp file left');
    t.set('two');
    await until(() => readOr(t.dest) === 'v=two\n', 'the next value');
  } finally {
    await t.cleanup();
  }
});

test('identical output writes nothing and reloads nothing; a failed reload is reported with the new file in place', async () => {
  const t = setup({ reload: { command: ['/bin/sh', '-c', 'echo reload >> "$CONFSYNC_RENDERED_FILE.reloads"; exit 3'] } });
  try {
    t.set('a');
    await until(() => t.counts().reloadFailed === 1, 'first reload');
    const before = fs.statSync(t.dest).ino;
    t.set('a'); // a new desired object with the same value: rendered, identical bytes
    await until(() => t.counts().unchanged === 1, 'the identical render');
    assert.equal(fs.statSync(t.dest).ino, before, 'not replaced');
    assert.deepEqual(t.counts(), { written: 1, unchanged: 1, failed: 0, waiting: 0, reloadFailed: 1 });
    assert.equal(readOr(`${t.dest}.reloads`), 'reload\n');
    assert.ok(t.logs.some((l) => l.msg === 'template "t": reload failed; ' + t.dest + ' has the new content' && /exit 3/.test(l.reload)));
  } finally {
    await t.cleanup();
  }
});

test('mode, owner and group are those of the config on the file that goes live, whatever the umask', { skip: process.getuid?.() !== 0 && 'needs root to chown' }, async () => {
  const t = setup({ mode: '0640', owner: 1234, group: 2345 });
  const umask = process.umask(0o077);
  try {
    t.set('x');
    await until(() => readOr(t.dest) === 'v=x\n', 'file');
    const st = fs.statSync(t.dest);
    assert.deepEqual([(st.mode & 0o777).toString(8), st.uid, st.gid], ['640', 1234, 2345]);
  } finally {
    process.umask(umask);
    await t.cleanup();
  }
});

test('the deep resync puts back a rendered file edited or removed by hand; an untouched one is left alone', async () => {
  const t = setup({ reload: { command: ['/bin/sh', '-c', 'echo reload >> "$CONFSYNC_RENDERED_FILE.reloads"'] } });
  try {
    t.set('v1');
    await until(() => readOr(`${t.dest}.reloads`) === 'reload\n', 'first file and reload');
    t.recheck();
    await until(() => t.counts().unchanged === 1, 'recheck of an untouched file');
    fs.writeFileSync(t.dest, 'edited by hand\n');
    t.recheck();
    await until(() => readOr(t.dest) === 'v=v1\n', 'hand edit put back');
    fs.rmSync(t.dest);
    t.recheck();
    await until(() => readOr(t.dest) === 'v=v1\n', 'removed file put back');
    await until(() => readOr(`${t.dest}.reloads`) === 'reload\nreload\nreload\n', 'a reload per repair');
    assert.deepEqual(t.counts(), { written: 3, unchanged: 1, failed: 0, waiting: 0, reloadFailed: 0 });
  } finally {
    await t.cleanup();
  }
});
