/**
 * The start-up heap pacer (heap-pacer.ts) against V8 itself: armed, a checkpoint
 * after a step of garbage collects it; below a step it does not; disarmed, it
 * stops and says what it did.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import { HeapPacer } from '../src/heap-pacer.js';
import type { Logger } from '../src/log.js';

const used = () => v8.getHeapStatistics().used_heap_size / 2 ** 20;
/**
 * ~`mib` MiB of arrays that are garbage as soon as this returns (kept until then, so
 * promoted to the old generation). In one go: the pacer's own timer must not collect
 * them half-way, while they are still alive.
 */
function garbage(mib: number): void {
  assert.ok(alive(mib).length > 0);
}

/** ~`mib` MiB of arrays the caller keeps. */
function alive(mib: number): number[][] {
  const keep: number[][] = [];
  for (let i = 0; i < mib * 16; i++) keep.push(Array.from({ length: 8192 }, (_, j) => j + 0.5)); // 64 KiB of doubles each
  return keep;
}

function capture(): { logger: Logger; lines: { fields: Record<string, unknown>; msg: string }[] } {
  const lines: { fields: Record<string, unknown>; msg: string }[] = [];
  return { lines, logger: { debug: (fields: Record<string, unknown>, msg: string) => lines.push({ fields, msg }) } as unknown as Logger };
}

test('armed: a checkpoint after a step of garbage collects it, not below a step; disarm logs the collections and stops', () => {
  const { lines, logger } = capture();
  const pacer = new HeapPacer(logger);
  pacer.arm();
  assert.ok(pacer.armed);
  garbage(64);
  const before = used();
  pacer.checkpoint();
  const after = used();
  assert.ok(after < before - 40, `a step of garbage is collected at the checkpoint: ${before.toFixed(0)} -> ${after.toFixed(0)} MiB`);
  pacer.disarm();
  assert.ok(!pacer.armed);
  assert.equal(lines.at(-1)!.msg, 'start-up heap pacing done');
  assert.equal(lines.at(-1)!.fields.collections, 1, 'the checkpoint; none at disarm right after it');
  pacer.disarm(); // twice is nothing
  assert.equal(lines.filter((l) => l.msg === 'start-up heap pacing done').length, 1);
  // Below a step, a checkpoint leaves the heap alone: no collection is counted for it.
  const small = new HeapPacer(logger);
  small.arm();
  small.checkpoint();
  small.disarm();
  assert.equal(lines.at(-1)!.fields.collections, 0, 'nothing grew: no collection, not even at disarm');
  assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'gc is not left exposed to the program');
});

test('growth that stays alive doubles the step: a store filling up is not collected again and again', () => {
  const { lines, logger } = capture();
  const pacer = new HeapPacer(logger);
  pacer.arm();
  const kept = [alive(40)];
  pacer.checkpoint(); // a step grown: collected, and found alive
  kept.push(alive(40));
  pacer.checkpoint(); // 40 MiB more is under the doubled step: no collection
  pacer.disarm();
  assert.equal(lines.at(-1)!.fields.collections, 2, 'the first checkpoint and the one at disarm');
  assert.equal(kept.length, 2);
});

test('one pacing per process: daemons hosted together share it, and it ends with the last of them', () => {
  const { lines, logger } = capture();
  const a = new HeapPacer(logger);
  const b = new HeapPacer(logger);
  a.arm();
  b.arm();
  b.disarm(); // a is still starting: the pacing goes on, nothing said yet
  assert.equal(lines.length, 0);
  assert.ok(a.armed && !b.armed);
  garbage(64);
  const before = used();
  b.checkpoint(); // disarmed: nothing
  a.checkpoint();
  assert.ok(used() < before - 40, 'the pacing still armed by a collected the garbage');
  a.disarm();
  assert.equal(lines.length, 1, 'said once, by the last');
  assert.equal(lines[0]!.fields.collections, 1, 'one collection for the process, not one per daemon');
});
