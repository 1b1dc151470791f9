/**
 * rewrap and rollback re-seal with a fresh sealed version, against a real etcd:
 * never below the value they replace, even when the operator's clock is behind
 * the last writer's (daemons would take a lower one for a replay), and rewrap
 * upgrades v1 envelopes that are already sealed to the right recipients.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { rewrap } from '../src/admin/rewrap.js';
import { commitRollback, planRollback, resealPuts } from '../src/admin/rollback.js';
import { claimedVersion, openVersioned, seal } from '../src/envelope/envelope.js';
import { Keyring, generateIdentity, recipientOf } from '../src/envelope/identity.js';
import type { RecipientsFile } from '../src/envelope/recipients-file.js';
import { GLOBAL, Keyspace } from '../src/keyspace.js';
import { startEtcd } from './harness/etcd.js';
import { sealRaw } from './helpers/envelope-raw.js';

const P = '/confsync';
const ks = new Keyspace(P);
const id = generateIdentity();
const ring = new Keyring([id]);
const to = [recipientOf(id.publicKey)];
const AHEAD = Date.now() + 3_600_000; // a writer whose clock is an hour ahead

async function withEtcd(body: (client: Etcd3) => Promise<void>): Promise<void> {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  try {
    await body(client);
  } finally {
    client.close();
    await etcd.stop();
  }
}

test('rewrap: v1 sealed to the right set is upgraded, a clock-ahead value moves up by one, a current v2 is unchanged', async () => {
  await withEtcd(async (client) => {
    const other = [recipientOf(generateIdentity().publicKey)];
    const path = (k: string) => `global/secrets/default/app/${k}`;
    await client.put(`${P}/${path('legacy')}`).value(sealRaw(Buffer.from('L'), path('legacy'), id.publicKey, 1));
    await client.put(`${P}/${path('ahead')}`).value(await seal(Buffer.from('A'), path('ahead'), [...to, ...other], undefined, { now: () => AHEAD }));
    const current = await seal(Buffer.from('C'), path('current'), to);
    await client.put(`${P}/${path('current')}`).value(current);

    const before = Date.now();
    const summary = await rewrap({
      client,
      ks,
      scopes: [GLOBAL],
      pinned: { forScope: () => to } as unknown as RecipientsFile, // only forScope is used
      keyring: ring,
      concurrency: 2,
      warn: (line) => assert.fail(line),
      progress: { start() {}, tick() {} },
    });
    assert.deepEqual({ rewrapped: summary.counts.rewrapped, unchanged: summary.counts.unchanged }, { rewrapped: 2, unchanged: 1 });
    const read = async (k: string) => openVersioned((await client.get(`${P}/${path(k)}`).buffer())!, path(k), ring);
    const legacy = await read('legacy');
    assert.equal(legacy.plaintext.toString(), 'L');
    assert.ok(legacy.version >= before && legacy.version <= Date.now(), 'v1 -> v2 with the clock');
    assert.equal((await read('ahead')).version, AHEAD + 1, 'above the replaced value, not the (behind) clock');
    assert.equal(await client.get(`${P}/${path('current')}`).string(), current, 'untouched');
  });
});

test('rollback: the old value comes back under a version above the current one, even when the current one is from a clock ahead', async () => {
  await withEtcd(async (client) => {
    const logical = 'global/secrets/default/db/password';
    const key = `${P}/${logical}`;
    const first = await client.put(key).value(await seal(Buffer.from('old-pw'), logical, to)).exec();
    await client.put(key).value(await seal(Buffer.from('new-pw'), logical, to, undefined, { now: () => AHEAD }));
    const ref = { kind: 'secrets' as const, namespace: 'default', name: 'db' };
    const plan = await planRollback(client, ks, GLOBAL, ref, Number(first.header.revision));
    const values = await resealPuts(plan, ks, ring, to);
    await commitRollback(client, ks, plan, values);
    const now = (await client.get(key).buffer())!;
    assert.deepEqual(await openVersioned(now, logical, ring), { plaintext: Buffer.from('old-pw'), version: AHEAD + 1 });

    // And with a sane clock, simply now (the current value is older than the clock).
    const second = await client.put(key).value(await seal(Buffer.from('pw-3'), logical, to, undefined, { now: () => 1_000 })).exec();
    await client.put(key).value(await seal(Buffer.from('pw-4'), logical, to, undefined, { now: () => 2_000 }));
    const before = Date.now();
    const plan2 = await planRollback(client, ks, GLOBAL, ref, Number(second.header.revision));
    await commitRollback(client, ks, plan2, await resealPuts(plan2, ks, ring, to));
    const v = claimedVersion((await client.get(key).buffer())!)!;
    assert.ok(v >= before && v <= Date.now());
  });
});
