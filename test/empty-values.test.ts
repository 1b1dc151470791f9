/**
 * `secret set` and `config set` with nothing on stdin (`</dev/null`, a closed pipe, an
 * empty --file) refuse to store an empty value unless --allow-empty: an empty secret
 * is almost always a broken pipeline, and the daemon would faithfully roll it out.
 * The built CLI against a real etcd.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { MAIN } from './harness/daemon.js';

const P = '/confsync';
let etcd: EtcdHandle;
let dir: string;

function cli(args: string[], stdin: 'devnull' | string = 'devnull') {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const opts = { cwd: dir, encoding: 'utf8' as const, env: { ...env, CONFSYNC_ENDPOINTS: etcd.endpoint } };
  const r = stdin === 'devnull' ? spawnSync(process.execPath, [MAIN, ...args], { ...opts, stdio: [fs.openSync('/dev/null', 'r'), 'pipe', 'pipe'] }) : spawnSync(process.execPath, [MAIN, ...args], { ...opts, input: stdin });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const stored = (key: string) => etcd.ctl('get', '--keys-only', `${P}/${key}`).trim();

before(async () => {
  etcd = await startEtcd();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-empty-'));
  assert.equal(cli(['keygen', '--out', path.join(dir, 'a.key'), '--register', '--cluster', 'a']).code, 0);
  assert.equal(cli(['recipients', 'pull', '--yes']).code, 0);
});

after(async () => {
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

for (const kind of ['secret', 'config'] as const) {
  const key = `global/${kind === 'secret' ? 'secrets' : 'configmaps'}/default/app/k`;
  test(`${kind} set: an empty value from /dev/null, a pipe or an empty --file is refused; --allow-empty stores it`, () => {
    fs.writeFileSync(path.join(dir, 'empty'), '');
    for (const [what, args, stdin] of [
      ['</dev/null', [], 'devnull'],
      ['empty pipe', [], ''],
      ['empty --file', ['--file', path.join(dir, 'empty')], 'devnull'],
    ] as const) {
      const r = cli([kind, 'set', 'default/app/k', ...args], stdin);
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.match(r.stderr, /^confsync: .*empty value.*--allow-empty/);
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
      assert.equal(stored(key), '', `${what}: nothing was put`);
    }
    const ok = cli([kind, 'set', 'default/app/k', '--allow-empty']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(stored(key), `${P}/${key}`);
    if (kind === 'secret') assert.equal(cli(['secret', 'get', 'default/app/k', '--identity', path.join(dir, 'a.key')]).stdout, '');
    else assert.equal(cli(['config', 'get', 'default/app/k']).stdout, '');
  });
}

/** The CLI on a pseudo-terminal (util-linux `script`), typing `typed` once it prompts. */
async function onTerminal(args: string[], typed: string): Promise<{ code: number | null; out: string }> {
  const { spawn } = await import('node:child_process');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const cmd = [process.execPath, MAIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const p = spawn('script', ['-qec', cmd, '/dev/null'], { cwd: dir, env: { ...env, CONFSYNC_ENDPOINTS: etcd.endpoint }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let sent = false;
  p.stdout!.on('data', (b) => {
    out += b;
    if (!sent && out.includes('value (Enter to finish): ')) {
      sent = true;
      p.stdin!.write(typed);
    }
  });
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  return { code, out: out.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '') }; // readline's cursor moves
}

test('config set on a terminal prompts for the value (echoed: config is not secret); an empty answer is refused', async () => {
  const r = await onTerminal(['config', 'set', 'default/tty/greeting'], 'hello, tty\r');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /value \(Enter to finish\): hello, tty/);
  assert.equal(etcd.ctl('get', '--print-value-only', `${P}/global/configmaps/default/tty/greeting`).trim(), 'hello, tty');

  const empty = await onTerminal(['config', 'set', 'default/tty/blank'], '\r');
  assert.equal(empty.code, 2, empty.out);
  assert.match(empty.out, /empty value from the prompt; nothing written/);
  assert.equal(stored('global/configmaps/default/tty/blank'), '');
});
