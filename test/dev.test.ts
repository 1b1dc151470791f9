/**
 * `confsync dev` (issue 14, item 6), as a user runs it: one instance per
 * directory (lock file), its printed `export …` line makes `secret set`/`get`
 * work from a second shell, no persistent-disk warning for its own secrets,
 * and its etcd dying is noticed (started again once; dev stops with a message
 * when it keeps dying).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAIN, readOr, until } from './harness/daemon.js';
import { etcdBinaries } from './harness/etcd.js';
import { freePort } from './harness/ports.js';

const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));

function etcdChild(devPid: number): number | undefined {
  const r = spawnSync('ps', ['-o', 'pid=,comm=', '--ppid', String(devPid)], { encoding: 'utf8' });
  const line = r.stdout.split('\n').find((l) => l.trim().endsWith('etcd'));
  return line ? Number(line.trim().split(/\s+/)[0]) : undefined;
}

test('confsync dev: lock per directory, export line for a second shell, no persistent-disk warning, etcd deaths noticed', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-dev-'));
  const port = await freePort();
  const dev = spawn(process.execPath, [MAIN, 'dev', '--port', String(port)], { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  dev.stdout!.on('data', (b) => (out += b));
  dev.stderr!.on('data', (b) => (err += b));
  const exited = new Promise<number | null>((r) => dev.once('exit', (code) => r(code)));
  const dir = path.join(cwd, '.confsync');
  try {
    await until(() => out.includes('first full sync'), 'dev up');
    assert.ok(!out.includes('persistent filesystem'), 'no persistent-disk warning for dev secrets');

    // The printed export line, run in a plain shell, is all `secret set`/`get` need.
    const exportLine = err.split('\n').find((l) => l.startsWith('export '));
    assert.ok(exportLine, `an export line:\n${err}`);
    assert.match(exportLine, new RegExp(`CONFSYNC_ENDPOINTS=http://127\\.0\\.0\\.1:${port} CONFSYNC_RECIPIENTS=\\S+recipients\\.yaml CONFSYNC_IDENTITY=\\S+identity\\.key$`));
    assert.equal(fs.readFileSync(path.join(dir, 'env'), 'utf8'), `${exportLine}\n`);
    const sh = (cmd: string, input = '') => spawnSync('bash', ['-c', `${exportLine} && ${cmd}`], { cwd: os.tmpdir(), env: cleanEnv(), input, encoding: 'utf8' });
    const set = sh(`${process.execPath} ${MAIN} secret set default/db/password`, 's3cret');
    assert.equal(set.status, 0, set.stderr);
    const get = sh(`${process.execPath} ${MAIN} secret get default/db/password`);
    assert.equal(get.status, 0, get.stderr);
    assert.equal(get.stdout.replace(/\n$/, ''), 's3cret');
    await until(() => readOr(path.join(dir, 'out/secrets/default/db/password')) === 's3cret', 'secret file');

    // A second dev on the same directory is refused, and the first one runs on.
    const second = spawnSync(process.execPath, [MAIN, 'dev', '--port', String(await freePort())], { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 20_000 });
    assert.equal(second.status, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`^confsync: another "confsync dev" \\(pid ${dev.pid}\\) is already running on ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.equal(second.stderr.trim().split('\n').length, 1, 'one line');
    assert.equal(fs.readFileSync(path.join(dir, 'dev.lock'), 'utf8').trim(), String(dev.pid));

    // etcd killed: dev says so and starts it again; the daemon picks up the next put.
    const etcdPid = etcdChild(dev.pid!);
    assert.ok(etcdPid, 'dev runs etcd as its child');
    process.kill(etcdPid, 'SIGKILL');
    await until(() => err.includes('etcd was killed (SIGKILL); starting it again'), 'restart message');
    const { etcdctl } = etcdBinaries();
    await until(() => spawnSync(etcdctl, ['--endpoints', `http://127.0.0.1:${port}`, 'put', '/confsync/global/configmaps/default/app/k', 'after'], { encoding: 'utf8' }).status === 0, 'etcd back');
    await until(() => readOr(path.join(dir, 'out/configmaps/default/app/k')) === 'after', 'daemon reconnected', 20_000);

    // Killed again soon after a restart: dev stops with a message, exit 1, lock released.
    const again = await until(() => etcdChild(dev.pid!), 'restarted etcd');
    process.kill(again, 'SIGKILL');
    assert.equal(await exited, 1);
    assert.match(err, /confsync dev: etcd was killed \(SIGKILL\) again within 10 s of a restart .*; stopping the daemon/);
    assert.ok(!fs.existsSync(path.join(dir, 'dev.lock')), 'lock removed');
  } finally {
    const left = etcdChild(dev.pid!);
    if (dev.exitCode === null || left) dev.kill('SIGKILL');
    if (left) process.kill(left, 'SIGKILL');
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
