/**
 * `confsync rewrap` at scale against a real etcd: 10,000 secrets sealed to OLD are
 * re-sealed to {NEW, OLD} and then to {NEW}, while a reader keeps opening random
 * keys (zero failures: no downtime) and a writer keeps changing some of them
 * (the mod-revision guard must never overwrite a newer value). Timings are printed
 * as diagnostics; bench/ is where speed goals are judged, not here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { stringify } from 'yaml';
import { envelopeRecipients, open, seal } from '../src/envelope/envelope.js';
import { Keyring, generateIdentity, recipientOf, writeIdentityFile, type Identity } from '../src/envelope/identity.js';
import { MAIN } from './harness/daemon.js';
import { startEtcd } from './harness/etcd.js';

const P = '/confsync';
const N = Number(process.env.CONFSYNC_REWRAP_N ?? 10_000);
const logical = (i: number) => `global/secrets/ns${i % 10}/s${i}/value`;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The CLI as a child process, asynchronously: the readers keep running meanwhile. */
function cli(args: string[], env: Record<string, string>): Promise<Run> {
  const started = Date.now();
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })));
}

/** The CLI's own rate (keys/s, node start excluded) from its `elapsed:` line. */
const rate = (run: Run) => /\((\d+) keys\/s/.exec(run.stdout)?.[1];

function summary(run: Run): Record<string, number> {
  return Object.fromEntries([...run.stdout.matchAll(/^([a-z-]+): (\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

async function limit<T>(items: T[], inFlight: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

test(`rewrap ${N} secrets OLD -> {NEW, OLD} -> {NEW} with concurrent readers and a writer`, async (t) => {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint, grpcOptions: { 'grpc.max_receive_message_length': 256 * 1024 * 1024 } });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-rewrap-'));
  const OLD = generateIdentity();
  const NEW = generateIdentity();
  const [oldR, newR] = [recipientOf(OLD.publicKey), recipientOf(NEW.publicKey)];
  const keyFile = async (name: string, id: Identity) => {
    const file = path.join(dir, name);
    await writeIdentityFile(file, { publicKey: id.publicKey, privateKey: Uint8Array.from(id.privateKey) });
    return file;
  };
  const recipientsFile = (name: string, admins: string[]) => {
    const file = path.join(dir, `${name}.yaml`);
    fs.writeFileSync(file, stringify({ clusters: {}, admins }));
    return file;
  };
  const env = { CONFSYNC_ENDPOINTS: etcd.endpoint };
  const latest: string[] = [];

  try {
    // Seed: N secrets sealed to OLD only, 64 puts in flight.
    let t0 = Date.now();
    const indexes = Array.from({ length: N }, (_, i) => i);
    await limit(indexes, 64, async (i) => {
      latest[i] = `v-${i}-initial-${Math.random().toString(36).slice(2)}`;
      await client.put(`${P}/${logical(i)}`).value(await seal(Buffer.from(latest[i]!), logical(i), [oldR]));
    });
    t.diagnostic(`seeded ${N} secrets sealed to OLD in ${Date.now() - t0} ms`);

    /** Opens random keys until stopped; any failure to open is a downtime. */
    const readers = (keyring: Keyring, count: number) => {
      const stats = { opens: 0, failed: 0, wrongKey: 0, stop: false };
      const loops = Array.from({ length: count }, async () => {
        while (!stats.stop) {
          const i = Math.floor(Math.random() * N);
          const value = await client.get(`${P}/${logical(i)}`).buffer();
          try {
            const plain = (await open(value!, logical(i), keyring)).toString();
            if (!plain.startsWith(`v-${i}-`)) stats.wrongKey++;
            stats.opens++;
          } catch {
            stats.failed++;
          }
        }
      });
      return { stats, stop: async () => ((stats.stop = true), await Promise.all(loops)) };
    };

    // (1) OLD -> {NEW, OLD}, with a reader holding OLD only and a writer sealing new values to {NEW, OLD}.
    const oldKeyring = new Keyring([{ publicKey: OLD.publicKey, privateKey: Uint8Array.from(OLD.privateKey) }]);
    const newKeyring = new Keyring([{ publicKey: NEW.publicKey, privateKey: Uint8Array.from(NEW.privateKey) }]);
    const both = recipientsFile('new-and-old', [newR.text, oldR.text]);
    const r1 = readers(oldKeyring, 1);
    const writer = { writes: 0, stop: false };
    const writing = (async () => {
      while (!writer.stop) {
        const i = Math.floor(Math.random() * N);
        const v = `v-${i}-rewritten-${writer.writes}`;
        await client.put(`${P}/${logical(i)}`).value(await seal(Buffer.from(v), logical(i), [newR, oldR]));
        latest[i] = v;
        writer.writes++;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const run1 = await cli(['rewrap', '--identity', await keyFile('old.key', OLD), '--recipients-file', both], env);
    writer.stop = true;
    await writing;
    await r1.stop();
    assert.equal(run1.code, 0, run1.stderr);
    const s1 = summary(run1);
    t.diagnostic(`rewrap 1 (OLD -> {NEW, OLD}): ${run1.ms} ms wall incl. node start, ${rate(run1)} secrets/s by its own clock; ${JSON.stringify(s1)}; readers: ${JSON.stringify(r1.stats)}; writer: ${writer.writes} writes`);
    assert.equal(s1.rewrapped! + s1.unchanged!, N, run1.stdout);
    assert.ok(s1.rewrapped! >= N - writer.writes);
    assert.equal(s1['not-a-recipient'], 0);
    assert.equal(r1.stats.failed, 0, 'no reader ever failed to open during rewrap 1');
    assert.equal(r1.stats.wrongKey, 0);
    assert.ok(r1.stats.opens > 100, `readers did run (${r1.stats.opens} opens)`);
    assert.match(run1.stderr, /rewrap: \d+\/\d+ \(\d+%\)/, 'progress lines on a non-TTY');

    const all = async () => (await client.getAll().prefix(`${P}/global/secrets/`).exec()).kvs;
    let kvs = await all();
    assert.equal(kvs.length, N);
    for (const kv of kvs) assert.deepEqual(new Set(envelopeRecipients(kv.value)), new Set([newR.id, oldR.id]), kv.key.toString());
    // The guard kept every concurrent write: each key holds the latest plaintext written to it.
    t0 = Date.now();
    for (const kv of kvs) {
      const i = Number(/\/s(\d+)\//.exec(kv.key.toString())![1]);
      assert.equal((await open(kv.value, logical(i), oldKeyring)).toString(), latest[i], `key ${i}`);
    }
    t.diagnostic(`verified ${N} opens with OLD in ${Date.now() - t0} ms`);

    // (2) {NEW, OLD} -> {NEW}, read with NEW meanwhile; the identity used holds NEW only.
    const onlyNew = recipientsFile('new-only', [newR.text]);
    const r2 = readers(newKeyring, 1);
    const run2 = await cli(['rewrap', '--identity', await keyFile('new.key', NEW), '--recipients-file', onlyNew], env);
    await r2.stop();
    assert.equal(run2.code, 0, run2.stderr);
    const s2 = summary(run2);
    t.diagnostic(`rewrap 2 ({NEW, OLD} -> {NEW}): ${run2.ms} ms wall, ${rate(run2)} secrets/s by its own clock; ${JSON.stringify(s2)}; readers: ${JSON.stringify(r2.stats)}`);
    assert.equal(s2.rewrapped, N);
    assert.equal(r2.stats.failed, 0, 'no reader ever failed to open during rewrap 2');

    kvs = await all();
    t0 = Date.now();
    let openedWithOld = 0;
    for (const kv of kvs) {
      const i = Number(/\/s(\d+)\//.exec(kv.key.toString())![1]);
      assert.deepEqual(envelopeRecipients(kv.value), [newR.id]);
      assert.equal((await open(kv.value, logical(i), newKeyring)).toString(), latest[i]);
      await open(kv.value, logical(i), oldKeyring).then(() => openedWithOld++, () => {});
    }
    assert.equal(openedWithOld, 0, 'a keyring with only OLD opens none');
    t.diagnostic(`verified ${N} with NEW (and none with OLD) in ${Date.now() - t0} ms`);

    // (3) Idempotent: a second run finds nothing to do and needs no crypto.
    const run3 = await cli(['rewrap', '--identity', path.join(dir, 'new.key'), '--recipients-file', onlyNew], env);
    assert.equal(run3.code, 0, run3.stderr);
    assert.equal(summary(run3).unchanged, N);
    assert.equal(summary(run3).rewrapped, 0);
    t.diagnostic(`rewrap 3 (no-op): ${run3.ms} ms`);

    // (4) An identity that opens nothing: everything skipped, exit 1, old values untouched.
    const stranger = await keyFile('stranger.key', generateIdentity());
    const run4 = await cli(['rewrap', '--identity', stranger, '--recipients-file', both, '--under', 'ns3'], env);
    assert.equal(run4.code, 1);
    assert.equal(summary(run4)['not-a-recipient'], N / 10);
    assert.match(run4.stderr, /still sealed to their old recipients/);
    oldKeyring.dispose();
    newKeyring.dispose();
  } finally {
    client.close();
    fs.rmSync(dir, { recursive: true, force: true });
    await etcd.stop();
  }
});
