/**
 * The renderer's write path on real files and real processes (render/renderer.ts,
 * render/write.ts), fed a desired state built in memory: a check that times out
 * keeps the old file; identical output writes and reloads nothing; mode, owner and
 * group are set on the file that goes live; a reload that fails is reported with
 * the new file in place; a hand edit is put back by the deep resync's recheck.
 * A directory dest (`destFile`): the `..data` swap with `check` against the new
 * payload before it, a reader that never sees a torn file over 200 renders, and a
 * link or foreign dir at dest refused by name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { parseConfig } from '../src/config/load.js';
import type { DesiredObject } from '../src/desired/types.js';
import { createLogger } from '../src/log.js';
import { prepareTemplates } from '../src/render/load.js';
import { Renderer } from '../src/render/renderer.js';
import { readOr, until } from './harness/daemon.js';
import { versionedValue } from './helpers/versioned-value.js';

/** `dirForm`: dest is the directory `<dir>/out` with destFile `t.conf` (the file opened is the same path either way). */
function setup(template: Record<string, unknown>, { dirForm = false, text = 'v={{ configmaps["default/app"].keys.v }}\n' } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-tplw-'));
  fs.writeFileSync(path.join(dir, 't.liquid'), text);
  const where = dirForm ? { dest: path.join(dir, 'out'), destFile: 't.conf' } : { dest: path.join(dir, 'out', 't.conf') };
  const cfg = parseConfig({ cluster: 'eu', templates: [{ name: 't', source: path.join(dir, 't.liquid'), ...where, ...template }] }, 'test', {}, {});
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
  return { dir, out: path.join(dir, 'out'), dest: path.join(dir, 'out', 't.conf'), set, counts, recheck, logs, cleanup: async () => (await r.close(), fs.rmSync(dir, { recursive: true, force: true })) };
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

const sh = (script: string) => ['/bin/sh', '-c', script];
/** The payload dirs, `..data` and the rest of a directory dest, sorted. */
const entries = (dir: string) => fs.readdirSync(dir).sort();

test('a directory dest: the file goes live by a ..data swap, check runs on the new payload before it; a refused one leaves the old payload live; identical bytes write nothing', async () => {
  // The check and the reload find <dir>/out from the path they are given, and record what they saw in <dir>.
  const t = setup(
    {
      check: sh('p=${CONFSYNC_RENDERED_FILE%/*}; out=${p%/*}; echo "$CONFSYNC_RENDERED_FILE" >> "$out/../checked"; cat "$out/t.conf" > "$out/../at-check" 2>/dev/null; ! grep -q bad "$CONFSYNC_RENDERED_FILE"'),
      reload: { command: sh('echo "$CONFSYNC_RENDERED_FILE" >> "${CONFSYNC_RENDERED_FILE%/*}/../reloads"') },
      mode: '0640',
    },
    { dirForm: true },
  );
  const target = () => fs.readlinkSync(path.join(t.out, '..data'));
  const lines = (f: string) => readOr(path.join(t.dir, f))?.trim().split('\n') ?? [];
  try {
    t.set('one');
    await until(() => readOr(t.dest) === 'v=one\n', 'first file');
    const first = target();
    assert.match(first, /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d_\d{3}\.[0-9a-f]{16}\.[A-Za-z0-9]{6}$/);
    assert.equal(fs.readlinkSync(t.dest), '..data/t.conf', 'the file opened is a link through ..data');
    assert.deepEqual(entries(t.out), [first, '..data', 't.conf'].sort());
    const payload = fs.lstatSync(path.join(t.out, first, 't.conf'));
    assert.ok(payload.isFile());
    assert.equal((payload.mode & 0o777).toString(8), '640');
    assert.deepEqual(lines('checked'), [path.join(t.out, first, 't.conf')], 'checked: the file in the payload dir that then went live');

    t.set('two');
    await until(() => readOr(t.dest) === 'v=two\n', 'second file');
    // The new file is readable from the ..data swap on; the old payload dir goes after it, then the reload runs.
    await until(() => t.counts().written === 2 && lines('reloads').length === 2, 'the second render and its reload done');
    assert.equal(readOr(path.join(t.dir, 'at-check')), 'v=one\n', 'the check ran while the old file was live');
    assert.notEqual(target(), first);
    assert.deepEqual(entries(t.out), [target(), '..data', 't.conf'].sort(), 'the old payload dir is gone');
    assert.deepEqual(lines('reloads'), [t.dest, t.dest], 'reload is told the path a service opens');

    const live = target();
    t.set('bad');
    await until(() => t.counts().failed === 1, 'the refused render');
    assert.equal(readOr(t.dest), 'v=two\n', 'old file intact');
    assert.deepEqual(entries(t.out), [live, '..data', 't.conf'].sort(), 'the refused payload dir is removed, the old one stays live');
    const warn = t.logs.find((l) => l.template === 't' && l.level === 40)!;
    assert.match(warn.err, /^check \/bin\/sh refused the new file \(exit 1/);
    assert.match(warn.msg, /^template "t" not rendered: /);

    t.set('two'); // what is live already: nothing written, no reload
    await until(() => t.counts().unchanged === 1, 'the identical render');
    assert.equal(target(), live);
    assert.equal(lines('reloads').length, 2);

    fs.rmSync(t.dest); // the link removed by hand: the deep resync puts it back
    t.recheck();
    await until(() => readOr(t.dest) === 'v=two\n', 'link put back');
    assert.deepEqual(t.counts(), { written: 3, unchanged: 1, failed: 1, waiting: 0, reloadFailed: 0 });
  } finally {
    await t.cleanup();
  }
});

test('a directory dest: a reader polling dest/<file> over 200 renders never sees a torn or missing file', async (t) => {
  const w = setup({}, { dirForm: true, text: '{{ configmaps["default/app"].keys.v }}' });
  const value = (v: number) => versionedValue(v, 't.conf').toString('latin1'); // 4-64 KiB, self-checking
  const shared = new SharedArrayBuffer(16);
  const counters = new Int32Array(shared);
  try {
    w.set(value(0));
    await until(() => w.counts().written === 1, 'first file');
    // The file sink's reader (test/helpers/reader-worker.ts), in its own thread: a missing file counts as torn.
    const worker = new Worker(new URL('./helpers/reader-worker.js', import.meta.url), { workerData: { dir: w.out, keys: ['t.conf'], shared } });
    const done = new Promise<{ samples: string[] }>((resolve, reject) => (worker.once('message', resolve), worker.once('error', reject)));
    const started = performance.now();
    try {
      for (let v = 1; v <= 200; v++) {
        w.set(value(v));
        while (w.counts().written < v + 1) {
          if (w.counts().failed) assert.fail(JSON.stringify(w.logs.at(-1)));
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    } finally {
      Atomics.store(counters, 0, 1);
    }
    const ms = performance.now() - started;
    const { samples } = await done;
    await worker.terminate();
    const [passes, straddled, torn] = [Atomics.load(counters, 1), Atomics.load(counters, 2), Atomics.load(counters, 3)];
    t.diagnostic(`200 renders + ..data swaps of 4-64 KiB: ${(ms / 200).toFixed(2)} ms each; reader: ${passes} reads checked, ${straddled} straddled a swap, ${torn} torn`);
    assert.deepEqual(samples, []);
    assert.equal(torn, 0);
    assert.ok(passes > 0);
    assert.equal(readOr(path.join(w.out, 't.conf')), value(200));
    assert.equal(entries(w.out).length, 3, 'one payload dir, ..data, the link');
  } finally {
    await w.cleanup();
  }
});

test('a directory dest that is a link, or a dir confsync does not manage, is refused by template name and left untouched', async () => {
  const t = setup({}, { dirForm: true });
  try {
    const elsewhere = path.join(t.dir, 'elsewhere');
    fs.mkdirSync(elsewhere);
    fs.writeFileSync(path.join(elsewhere, 'keep.txt'), 'keep\n');
    fs.symlinkSync(elsewhere, t.out);
    t.set('x');
    await until(() => t.counts().failed === 1, 'the refusal');
    const warn = t.logs.filter((l) => l.level === 40).at(-1)!;
    assert.equal(warn.msg, `template "t" not rendered: ${t.out} is a symbolic link; a directory dest is never followed (remove the link or choose another dest); ${t.out} keeps its old content, the next change renders it again`);
    assert.deepEqual(entries(elsewhere), ['keep.txt'], 'nothing written through the link');
    assert.ok(fs.lstatSync(t.out).isSymbolicLink());

    fs.rmSync(t.out);
    fs.mkdirSync(t.out);
    fs.writeFileSync(path.join(t.out, 'notes.txt'), 'mine\n');
    t.set('y');
    await until(() => t.counts().failed === 2, 'the second refusal');
    assert.match(t.logs.filter((l) => l.level === 40).at(-1)!.msg, /^template "t" not rendered: cannot write .*: .*out exists and is not managed by confsync \(no \.\.data\); refusing to write into it; /);
    assert.deepEqual(entries(t.out), ['notes.txt']);

    fs.rmSync(t.out, { recursive: true });
    t.set('z');
    await until(() => readOr(t.dest) === 'v=z\n', 'written once the way is clear');
  } finally {
    await t.cleanup();
  }
});
