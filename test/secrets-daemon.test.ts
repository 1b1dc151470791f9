/**
 * Secrets through the running daemon (a child process with `identity:` in its
 * config) and a real etcd: a sealed value becomes a 0400 file in a 0700 dir; every
 * kind of bad value (plaintext, tampered, moved, sealed to another cluster) is
 * refused by path while the last good value stays; and no plaintext used here
 * ever shows up in the daemon's log or in anything readable from etcd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';
import { startEtcd } from './harness/etcd.js';
import { withDaemon } from './harness/fixture.js';
import { walk } from './harness/walk.js';

const P = '/confsync';
const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);

const walkFiles = (dir: string) => walk(dir).filter((p) => fs.lstatSync(p, { throwIfNoEntry: false })?.isFile());

/** Flip one base64url character in the middle of the body: still well-formed text. */
function tamper(envelope: string): string {
  const i = Math.floor(envelope.length / 2);
  return envelope.slice(0, i) + (envelope[i] === 'A' ? 'B' : 'A') + envelope.slice(i + 1);
}

test('daemon opens sealed secrets into 0400 files; bad envelopes are refused by path, last good value kept; no plaintext leaks', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const eu = generateIdentity();
  const us = generateIdentity();
  const euR = recipientOf(eu.publicKey);
  const usR = recipientOf(us.publicKey);
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-key-'));
  const idFile = path.join(keyDir, 'eu.key');
  await writeIdentityFile(idFile, eu);
  // The harness writes this object as the daemon's YAML config.
  const withIdentity = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile, status: { intervalSeconds: 0.2 } });

  // Every plaintext this test uses; none may appear in the log or in etcd.
  const plain = {
    good: 'pw-good-7f3a91',
    a: 'pw-a-before-2c41', b: 'pw-b-before-93de', c: 'pw-c-before-51aa', d: 'pw-d-before-0b77',
    rawPlaintext: 'raw-plaintext-6d02',
    tampered: 'pw-tampered-8e15',
    moved: 'pw-moved-from-elsewhere-4410',
    otherCluster: 'pw-for-us-only-ab3c',
    later: 'pw-later-c90e',
  };
  const logical = (k: string) => `global/secrets/default/app/${k}`;
  const put = (k: string, v: string) => etcdc.put(`${P}/${logical(k)}`).value(v);
  const sealFor = (v: string, at: string, to = [euR]) => seal(Buffer.from(v), at, to);

  withIdentity.start();
  try {
    await withIdentity.ready();
    // Sealed to eu and us, as `secret set` does for global.
    await put('password', await sealFor(plain.good, logical('password'), [euR, usR]));
    for (const k of ['a', 'b', 'c', 'd'] as const) await put(`k-${k}`, await sealFor(plain[k], logical(`k-${k}`)));
    const file = (k: string) => withIdentity.file('secrets', 'default', 'app', k);
    await until(() => readOr(file('password')) === plain.good && readOr(file('k-d')) === plain.d, 'sealed values projected');
    assert.equal(mode(file('password')), '400', 'secret file mode');
    assert.equal(mode(path.dirname(file('password'))), '700', 'secret object dir mode');
    assert.equal(mode(fs.realpathSync(path.dirname(fs.realpathSync(file('password'))))), '700', 'payload dir mode');

    const cases: { key: string; value: string; reason: string; before: string }[] = [
      { key: 'k-a', value: plain.rawPlaintext, reason: 'not-an-envelope', before: plain.a },
      { key: 'k-b', value: tamper(await sealFor(plain.tampered, logical('k-b'))), reason: 'corrupt', before: plain.b },
      { key: 'k-c', value: await sealFor(plain.moved, 'global/secrets/default/other/k-c'), reason: 'corrupt', before: plain.c },
      { key: 'k-d', value: await sealFor(plain.otherCluster, logical('k-d'), [usR]), reason: 'not-a-recipient', before: plain.d },
    ];
    for (const c of cases) {
      if (c.key === 'k-a') etcd.ctl('put', `${P}/${logical(c.key)}`, c.value); // (a) raw etcdctl, as an operator would
      else await put(c.key, c.value);
      const reported = new RegExp(`"path":"${logical(c.key)}","reason":"envelope cannot be opened \\(${c.reason}\\)"`);
      await until(() => reported.test(withIdentity.log), `${c.key} reported with reason ${c.reason}`);
      assert.equal(readOr(file(c.key)), c.before, `${c.key}: last good value kept`);
      assert.equal(readOr(file('password')), plain.good);
      assert.ok(withIdentity.running, 'daemon alive');
    }
    // Still applying changes after all of that.
    await put('later', await sealFor(plain.later, logical('later')));
    await until(() => readOr(file('later')) === plain.later, 'a later good secret');
    for (const c of cases) assert.equal(readOr(file(c.key)), c.before);

    // The status key reports the last problem by path and reason, never a value.
    const status = await until(() => {
      const out = etcd.ctl('get', '--print-value-only', `${P}/status/eu/n1`).trim();
      return out && JSON.parse(out).lastError?.path === logical('k-d') ? JSON.parse(out) : undefined;
    }, 'status with the last error');
    assert.equal(status.lastError.reason, 'envelope cannot be opened (not-a-recipient)');

    // The only place a plaintext may be is the secrets projection itself.
    const everything = Object.values(plain);
    const leaks = (where: string, text: string) => everything.filter((p) => text.includes(p)).map((p) => `${where}: ${p}`);
    etcd.ctl('del', `${P}/${logical('k-a')}`); // the one value that was put as plaintext on purpose
    const found = [
      ...leaks('daemon log', withIdentity.log),
      ...leaks('etcd', etcd.ctl('get', '--prefix', '/')),
    ];
    const secretsRoot = path.join(withIdentity.root, 'secrets');
    for (const f of walkFiles(withIdentity.dir).filter((f) => !f.startsWith(secretsRoot + path.sep))) {
      found.push(...leaks(f, fs.readFileSync(f, 'latin1')));
    }
    assert.deepEqual(found, [], 'no plaintext outside the secret files');
    assert.match(withIdentity.log, /"msg":"secret not opened; last good value kept"/);
    assert.equal(await withIdentity.signal('SIGTERM'), 0);
  } finally {
    etcdc.close();
    await withIdentity.cleanup();
    fs.rmSync(keyDir, { recursive: true, force: true });
    await etcd.stop();
  }
});

test('daemon without an identity reports secrets by path and writes none', async () => {
  await withDaemon({ cluster: 'eu' }, async ({ etcdc, d }) => {
    const r = recipientOf(generateIdentity().publicKey);
    await etcdc.put(`${P}/global/secrets/default/x/k`).value(await seal(Buffer.from('unused-9d1f'), 'global/secrets/default/x/k', [r]));
    await until(() => d.log.includes('"path":"global/secrets/default/x/k","reason":"no identity configured: cannot open secrets"'), 'reported');
    assert.equal(fs.existsSync(d.file('secrets', 'default', 'x')), false);
    assert.ok(!d.log.includes('unused-9d1f'));
  });
});
