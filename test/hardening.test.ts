/**
 * Defects found by attacking the daemon (issue "Hardening"), each through the
 * real daemon and a real etcd. Each of these failed before its fix:
 *  - a placement glob of thousands of `*` froze the event loop (ReDoS);
 *  - one unopenable key froze its whole object, and a new object with one bad
 *    key was never created;
 *  - a permanent sink error was retried and logged every second forever;
 *  - one object with thousands of keys starved every other object.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { SecretCache, zeroUnless } from '../src/reconcile/secrets.js';
import { matchesGlob } from '../src/glob.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';
import { withDaemon } from './harness/fixture.js';
import { startEtcd } from './harness/etcd.js';
import { freePort } from './harness/ports.js';

const P = '/confsync';

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 2000 }, (res) => (res.resume(), resolve(res.statusCode ?? 0)));
    req.on('timeout', () => req.destroy(new Error(`${url} did not answer within 2 s`)));
    req.on('error', reject);
  });
}

// A hang guard, not a speed goal: an exponential matcher never finishes these.
test('glob: star-heavy patterns on long names finish (linear-time matcher)', { timeout: 10_000 }, () => {
  assert.equal(matchesGlob('prod-eu-west-1', `${'*'.repeat(500)}X`), false);
  assert.equal(matchesGlob('a'.repeat(253), `${'*a'.repeat(200)}b`), false);
  assert.equal(matchesGlob('a'.repeat(253), `${'*a'.repeat(200)}`), true);
});

test('ReDoS: a placement of 8,000 stars is refused as bad @meta; the daemon keeps serving /healthz and applying', async () => {
  const port = await freePort();
  await withDaemon({ cluster: 'prod-eu-west-1', metrics: { listen: `127.0.0.1:${port}` } }, async ({ etcdc, d }) => {
    await etcdc.put(`${P}/global/configmaps/default/x/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/x/@meta`).value(JSON.stringify({ placement: { clusters: [`${'*'.repeat(8000)}X`] } }));
    // Within the 512-character cap but still star-heavy: matched in linear time.
    await etcdc.put(`${P}/global/configmaps/default/y/@meta`).value(JSON.stringify({ placement: { clusters: [`${'*'.repeat(500)}X`] } }));
    await etcdc.put(`${P}/global/configmaps/default/y/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/after/k`).value('ok');
    await until(() => readOr(d.file('configmaps', 'default', 'after', 'k')) === 'ok', 'a later object applied');
    assert.equal(await get(`http://127.0.0.1:${port}/healthz`), 200);
    await until(() => d.log.includes('global/configmaps/default/x/@meta'), 'the oversized glob reported by path');
    assert.equal(fs.existsSync(d.file('configmaps', 'default', 'y')), false, 'y excluded: its placement does not match');
  });
});

test('one unopenable key does not freeze its object: the re-sealed password goes live; a new object with one bad key is created without it', async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const id = generateIdentity();
  const r = recipientOf(id.publicKey);
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-key-'));
  const idFile = path.join(keyDir, 'eu.key');
  await writeIdentityFile(idFile, id);
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, identity: idFile }).start();
  const sealAt = async (logical: string, plain: string) => (await seal(Buffer.from(plain), logical, [r])).toString();
  try {
    await d.ready();
    const db = (k: string) => `global/secrets/default/db/${k}`;
    await etcdc.put(`${P}/${db('password')}`).value(await sealAt(db('password'), 'pw-1'));
    await etcdc.put(`${P}/${db('user')}`).value(await sealAt(db('user'), 'admin'));
    await until(() => readOr(d.file('secrets', 'default', 'db', 'password')) === 'pw-1', 'first password');
    // An envelope copied from another path: it must not open here.
    await etcdc.put(`${P}/${db('replayed')}`).value(await sealAt(db('password'), 'pw-1'));
    await until(() => d.log.includes(db('replayed')), 'the replayed key reported by path');
    await etcdc.put(`${P}/${db('password')}`).value(await sealAt(db('password'), 'pw-2'));
    await until(() => readOr(d.file('secrets', 'default', 'db', 'password')) === 'pw-2', 'the re-sealed password written despite the bad key');
    assert.equal(fs.existsSync(d.file('secrets', 'default', 'db', 'replayed')), false);
    assert.equal(readOr(d.file('secrets', 'default', 'db', 'user')), 'admin');

    const fresh = (k: string) => `global/secrets/default/fresh/${k}`;
    await etcdc.put(`${P}/${fresh('bad')}`).value('plaintext, not an envelope');
    await etcdc.put(`${P}/${fresh('good')}`).value(await sealAt(fresh('good'), 'g-1'));
    await until(() => readOr(d.file('secrets', 'default', 'fresh', 'good')) === 'g-1', 'a new object with one bad key created');
    assert.equal(fs.existsSync(d.file('secrets', 'default', 'fresh', 'bad')), false);
    assert.ok(!d.log.includes('plaintext, not an envelope') && !d.log.includes('pw-2'), 'no value in the log');
  } finally {
    etcdc.close();
    await d.cleanup();
    await etcd.stop();
    fs.rmSync(keyDir, { recursive: true, force: true });
  }
});

test('a permanent sink error backs off and is logged once per state change; fixing it recovers', async () => {
  await withDaemon({ cluster: 'eu', status: { intervalSeconds: 0.2 } }, async ({ etcdc, d }) => {
    // A regular file where the object's directory must go: every apply fails.
    fs.mkdirSync(path.join(d.root, 'configmaps', 'default'), { recursive: true });
    fs.writeFileSync(d.file('configmaps', 'default', 'blocked'), 'not a dir');
    await etcdc.put(`${P}/global/configmaps/default/blocked/k`).value('1');
    await etcdc.put(`${P}/global/configmaps/default/fine/k`).value('1');
    await until(() => readOr(d.file('configmaps', 'default', 'fine', 'k')) === '1', 'other objects still apply');
    await new Promise((r) => setTimeout(r, 6000));
    const attempts = d.log.split('\n').filter((l) => l.includes('configmaps/default/blocked') && /sink (could not apply|still failing)/.test(l));
    const warnings = attempts.filter((l) => l.includes('could not apply'));
    // Backoff 1, 2, 4 s (±25 %): at most 4 attempts in ~6 s, where one per second made 6+.
    assert.ok(attempts.length >= 2 && attempts.length <= 4, `attempts in 6 s: ${attempts.length}`);
    assert.equal(warnings.length, 1, 'one warning for one unchanged failure');
    const status = JSON.parse((await etcdc.get(`${P}/status/eu/n1`).string())!);
    assert.equal(status.failing, 1);
    fs.rmSync(d.file('configmaps', 'default', 'blocked'));
    await until(() => readOr(d.file('configmaps', 'default', 'blocked', 'k')) === '1', 'recovered after the obstacle went', 20_000);
    await until(() => d.log.includes('sink applied object again after failing'), 'recovery logged');
  });
});

test('an object over limits.maxObjectKeys is held with a clear error; other objects keep flowing', async () => {
  await withDaemon({ cluster: 'eu', limits: { maxObjectKeys: 100 } }, async ({ etcdc, d }) => {
    // One transaction: the object is never seen below the limit.
    const keys = Array.from({ length: 101 }, (_, i) => etcdc.put(`${P}/global/configmaps/default/huge/k${i}`).value('v'));
    await etcdc.if(`${P}/global/configmaps/default/huge/k0`, 'Mod', '>', -1).then(...keys).commit();
    await etcdc.put(`${P}/global/configmaps/default/small/k`).value('ok');
    await until(() => readOr(d.file('configmaps', 'default', 'small', 'k')) === 'ok', 'small object applied');
    await until(() => /configmaps\/default\/huge.*101 keys, over limits\.maxObjectKeys \(100\)/.test(d.log), 'the limit reported, naming the field');
    assert.equal(fs.existsSync(d.file('configmaps', 'default', 'huge')), false);
  });
});

test('opened secrets: a deleted or replaced value leaves the cache and its plaintext is zeroed', async () => {
  const opened: Buffer[] = [];
  const cache = new SecretCache(async (_path, env) => {
    const b = Buffer.from(`plain-${env.toString()}`);
    opened.push(b);
    return b;
  });
  const kv = (k: string, rev: number) => ({ key: k, value: Buffer.from(`${k}@${rev}`), modRevision: rev, path: `global/secrets/ns/o/${k}` });
  assert.deepEqual(await cache.refresh('secrets/ns/o', [kv('a', 1), kv('b', 1)]), []);
  const dropped = await cache.refresh('secrets/ns/o', [kv('a', 2)]); // a changed, b deleted
  assert.equal(dropped.length, 2);
  zeroUnless(dropped, []);
  assert.ok(opened[0]!.every((x) => x === 0) && opened[1]!.every((x) => x === 0), 'both old plaintexts zeroed');
  assert.equal((cache.get('global/secrets/ns/o/a', 'secrets/ns/o') as Buffer).toString(), 'plain-a@2');
  assert.deepEqual(cache.get('global/secrets/ns/o/b', 'secrets/ns/o'), { error: 'secret not opened' });
  const last = await cache.refresh('secrets/ns/o', []);
  zeroUnless(last, [opened[2]!]); // still used by a desired object: kept
  assert.equal(opened[2]!.toString(), 'plain-a@2');
});
