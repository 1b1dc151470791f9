/**
 * A reader in its own thread for the file sink's atomicity test. It loops over
 * one object dir reading every key through the user-visible `<dir>/<key>` link,
 * and brackets each pass with `readlink(..data)`. Timestamped dir names are
 * never reused, so equal readings before and after mean every open went through
 * the same payload dir: then all keys must be complete files of one version.
 * Passes where `..data` moved are counted as straddled and not judged.
 *
 * Shared counters (Int32Array over workerData.shared):
 *   [0] stop flag (set by the main thread)  [1] passes checked
 *   [2] passes straddled                     [3] torn or mixed passes
 */
import { readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseVersionedValue } from './versioned-value.js';

function run(dir: string, keys: string[], counters: Int32Array): string[] {
  const samples: string[] = [];
  const dataTarget = (): string | undefined => {
    try {
      return readlinkSync(path.join(dir, '..data'));
    } catch {
      return undefined; // not projected yet
    }
  };
  while (Atomics.load(counters, 0) === 0) {
    const before = dataTarget();
    if (before === undefined) continue;
    const seen: string[] = [];
    for (const key of keys) {
      try {
        const version = parseVersionedValue(readFileSync(path.join(dir, key)), key);
        seen.push(version === undefined ? `${key}:corrupt` : `v${version}`);
      } catch (err) {
        seen.push(`${key}:${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    }
    if (dataTarget() !== before) {
      Atomics.add(counters, 2, 1);
      continue;
    }
    if (new Set(seen).size === 1 && seen[0]!.startsWith('v')) {
      Atomics.add(counters, 1, 1);
    } else {
      Atomics.add(counters, 3, 1);
      if (samples.length < 5) samples.push(seen.join(','));
    }
  }
  return samples;
}

// `node --test dist/test/` also runs every file under test/ as a test file; only
// do work when started as a worker by the sink test.
if (!isMainThread && parentPort) {
  const { dir, keys, shared } = workerData as { dir: string; keys: string[]; shared: SharedArrayBuffer };
  parentPort.postMessage({ samples: run(dir, keys, new Int32Array(shared)) });
}
