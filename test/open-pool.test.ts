import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EnvelopeError, openVersioned, seal } from '../src/envelope/envelope.js';
import { generateIdentity, Keyring, recipientOf } from '../src/envelope/identity.js';
import { MIN_BATCH, OpenPool } from '../src/envelope/open-pool.js';
import { createLogger } from '../src/log.js';

const me = generateIdentity();
const other = generateIdentity();
/** A keyring of its own per test: dispose() zeroes the very key arrays it was given. */
const keyringOf = () => new Keyring([{ publicKey: me.publicKey, privateKey: Uint8Array.from(me.privateKey) }]);
const path = (i: number) => `global/secrets/ns/s${i}/k`;

function capture() {
  const lines: string[] = [];
  return { lines, logger: createLogger('warn', { write: (l: string) => (lines.push(l), true) } as unknown as NodeJS.WritableStream) };
}

async function envelopes(n: number, to = me) {
  return Promise.all(Array.from({ length: n }, async (_, i) => Buffer.from(await seal(Buffer.from(`value-${i}-\u00e9`), path(i), [recipientOf(to.publicKey)], undefined, { now: () => 1_000 + i }))));
}

test('open pool: a batch opens in the worker with the same plaintexts, versions and generic errors as inline; one open stays inline', async () => {
  const keyring = keyringOf();
  const pool = new OpenPool(keyring, { logger: createLogger('silent') });
  try {
    const good = await envelopes(100);
    const foreign = (await envelopes(1, other))[0]!;
    const asked = [
      ...good.map((e, i) => ({ p: path(i), e })),
      { p: path(0), e: good[1]! }, // moved to another path: its binding fails
      { p: path(0), e: foreign }, // sealed to someone else
      { p: path(0), e: Buffer.from('not an envelope') },
    ];
    const results = await Promise.allSettled(asked.map(({ p, e }) => pool.open(p, e)));
    assert.ok(pool.counts.worker >= 32, `the worker took a share of the 103 (${JSON.stringify(pool.counts)})`);
    assert.equal(pool.counts.worker + pool.counts.inline, asked.length);
    for (const [i, { p, e }] of asked.entries()) {
      const want = await openVersioned(e, p, keyring).then(
        (o) => ({ plaintext: o.plaintext.toString('latin1'), version: o.version }),
        (err: EnvelopeError) => err.reason,
      );
      const r = results[i]!;
      const got = r.status === 'fulfilled' ? { plaintext: r.value.plaintext.toString('latin1'), version: r.value.version } : (r.reason as EnvelopeError).reason;
      assert.deepEqual(got, want, `request ${i}`);
      if (r.status === 'rejected') assert.ok(r.reason instanceof EnvelopeError && r.reason.message === `envelope cannot be opened (${r.reason.reason})`);
    }
    assert.equal((results[0] as PromiseFulfilledResult<{ plaintext: Buffer }>).value.plaintext.toString(), 'value-0-\u00e9');

    const before = { ...pool.counts };
    const single = await pool.open(path(5), good[5]!);
    assert.equal(single.plaintext.toString(), 'value-5-\u00e9');
    assert.deepEqual(pool.counts, { inline: before.inline + 1, worker: before.worker }, `fewer than ${MIN_BATCH} at once open inline`);
  } finally {
    await pool.close();
    keyring.dispose();
  }
});

test('open pool: the worker ends when idle and starts again when needed; after close everything opens inline', async () => {
  const keyring = keyringOf();
  const pool = new OpenPool(keyring, { logger: createLogger('silent') });
  const good = await envelopes(20);
  const all = () => Promise.all(good.map((e, i) => pool.open(path(i), e)));
  await all();
  const worker = (pool as unknown as { worker?: unknown }).worker;
  assert.ok(worker, 'a worker runs after a batch');
  await new Promise((r) => setTimeout(r, 2_500));
  assert.equal((pool as unknown as { worker?: unknown }).worker, undefined, 'ended after 2 s idle');
  const { worker: w1 } = pool.counts;
  await all();
  assert.ok(pool.counts.worker > w1, 'a new worker took a share');
  assert.equal(pool.counts.worker + pool.counts.inline, 40);
  await pool.close();
  assert.equal((pool as unknown as { worker?: unknown }).worker, undefined);
  const inlineBefore = pool.counts.inline;
  const after = await all();
  assert.equal(after[3]!.plaintext.toString(), 'value-3-\u00e9');
  assert.equal(pool.counts.inline, inlineBefore + 20);
  keyring.dispose();
});

test('open pool: a worker that cannot run → one warning naming it, every open still answered inline', async () => {
  const keyring = keyringOf();
  const { lines, logger } = capture();
  const pool = new OpenPool(keyring, { logger, workerUrl: new URL('data:text/javascript,throw new Error("boom")') });
  try {
    const good = await envelopes(30);
    const first = await Promise.all(good.map((e, i) => pool.open(path(i), e)));
    const second = await Promise.all(good.map((e, i) => pool.open(path(i), e)));
    assert.deepEqual(
      [...first, ...second].map((o) => o.plaintext.toString()),
      [...good, ...good].map((_, i) => `value-${i % 30}-\u00e9`),
    );
    assert.equal(pool.counts.worker, 0);
    assert.equal(pool.counts.inline, 60);
    const warnings = lines.filter((l) => l.includes('opens secrets in bulk'));
    assert.equal(warnings.length, 1, lines.join(''));
    assert.match(warnings[0]!, /boom/);
    assert.doesNotMatch(lines.join(''), /value-/, 'no plaintext in the log');
  } finally {
    await pool.close();
    keyring.dispose();
  }
});

test('open pool: close() while slices are under way → every open is still answered, then the worker ends at once (no idle wait)', async () => {
  const keyring = keyringOf();
  const pool = new OpenPool(keyring, { logger: createLogger('silent') });
  const good = await envelopes(100);
  const opens = Promise.all(good.map((e, i) => pool.open(path(i), e)));
  await new Promise((r) => setImmediate(r)); // the first turn: slices sent to the worker
  const state = pool as unknown as { worker?: { once(e: string, f: () => void): void } };
  const worker = state.worker;
  assert.ok(worker, 'a worker took slices');
  const exited = new Promise<void>((r) => worker.once('exit', r));
  await pool.close();
  const opened = await opens;
  assert.deepEqual(opened.map((o) => o.plaintext.toString()), good.map((_, i) => `value-${i}-\u00e9`));
  const t = Date.now();
  await exited;
  assert.ok(Date.now() - t < 1_000, 'ended once answered, not after the 2 s idle timer');
  assert.equal(state.worker, undefined);
  keyring.dispose();
});
