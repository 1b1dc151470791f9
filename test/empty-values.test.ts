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
