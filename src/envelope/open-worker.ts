/**
 * The worker thread of open-pool.ts: opens slices of envelopes with its copy of
 * the keyring and answers each slice in one message, the plaintexts transferred.
 * 'close' zeroes the keys and ends the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openVersioned } from './envelope.js';
import { EnvelopeError } from './format.js';
import { Keyring, type Identity } from './identity.js';
import type { WorkerAnswer, WorkerRequest } from './open-pool.js';

const keyring = new Keyring((workerData as { identities: Identity[] }).identities);
const port = parentPort!;

port.on('message', async (msg: WorkerRequest | 'close') => {
  if (msg === 'close') {
    keyring.dispose();
    port.close();
    return;
  }
  const answers: WorkerAnswer['answers'] = [];
  const transfer = new Set<ArrayBuffer>();
  for (const [path, envelope] of msg.items) {
    try {
      const { plaintext, version } = await openVersioned(envelope, path, keyring);
      answers.push({ plaintext, version });
      // Moved, not copied, when the plaintext owns its whole buffer (libsodium's output does).
      if (plaintext.byteOffset === 0 && plaintext.buffer.byteLength === plaintext.byteLength) transfer.add(plaintext.buffer as ArrayBuffer);
    } catch (err) {
      answers.push({ reason: err instanceof EnvelopeError ? err.reason : 'corrupt' });
    }
  }
  const reply: WorkerAnswer = { id: msg.id, answers };
  port.postMessage(reply, [...transfer]);
});
