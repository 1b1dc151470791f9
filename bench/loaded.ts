/**
 * What a daemon costs once the keyspace is loaded (issue "Lean engine"), measured
 * right after the cold start on the same daemon and keyspace:
 *  - after ready: CPU over the first `settleSeconds` after the cold start (the
 *    first local snapshot, the drift watch's start: one-off work);
 *  - idle: CPU over the quiet window after that (one periodic resync pass falls
 *    inside a 60 s window), as a share of one core; then over a second window of
 *    the same length (steady: the first one still holds the start's heap shrinking);
 *  - a change: `puts` sequential puts to one object of the loaded keyspace, each
 *    waited for on disk; daemon CPU per put, and put → file latency;
 *  - restart: SIGTERM, the same daemon again on the same files with etcd
 *    unchanged: how it started (with an identity: resumed from its local
 *    snapshot, no list; without: a list), spawn → state loaded → /readyz,
 *    objects rewritten (confsync_writes_total), peak RSS.
 */
import fs from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3 } from 'etcd3';
import { DaemonProcess } from '../test/harness/daemon.js';
import { grid, pidOf, procUsage } from './put-to-file.js';
import { percentile } from './stats.js';

export interface LoadedOptions {
  client: Etcd3;
  daemon: DaemonProcess;
  port: number;
  /** A config object of the keyspace and the file its key `k0` lands in. */
  target: { key: string; file: string };
  /** One-off work after ready, measured apart from idle. */
  settleSeconds: number;
  idleSeconds: number;
  puts: number;
}

export async function loadedPhases(o: LoadedOptions): Promise<{ text: string; daemon: DaemonProcess }> {
  const pid = pidOf(o.daemon);
  // --- after ready, then idle
  const s0 = procUsage(pid).cpuSeconds;
  await sleep(o.settleSeconds * 1000);
  const settleCpu = procUsage(pid).cpuSeconds - s0;
  // VmHWM after the settle: the one-off work after ready (the drift watch's start,
  // the first full local snapshot) is part of starting: its transient heap was ~180 MiB
  // above the peak at ready at 20,000 objects while the drift watch scanned every object dir.
  const settlePeak = procUsage(pid).peakMiB;
  const i0 = procUsage(pid).cpuSeconds;
  await sleep(o.idleSeconds * 1000);
  const idleCpu = procUsage(pid).cpuSeconds - i0;
  // The same again right after: the first window holds V8's memory reducer shrinking
  // the start's heap (full collections that cost ~1 % of a core at 20,000 objects,
  // once); from the second on, idle is what a quiet daemon costs for as long as it runs.
  const j0 = procUsage(pid).cpuSeconds;
  await sleep(o.idleSeconds * 1000);
  const steadyCpu = procUsage(pid).cpuSeconds - j0;

  // --- a change with everything loaded
  const c0 = procUsage(pid).cpuSeconds;
  const lat: number[] = [];
  for (let i = 0; i < o.puts; i++) {
    const value = `loaded-${i}-${Date.now()}`;
    const t = performance.now();
    await o.client.put(o.target.key).value(value);
    while (readOr(o.target.file) !== value) await sleep(0.2);
    lat.push(performance.now() - t);
  }
  const perPut = ((procUsage(pid).cpuSeconds - c0) * 1000) / o.puts;
  const sorted = [...lat].sort((a, b) => a - b);

  // --- restart on the same files, etcd unchanged
  const writesBefore = await writes(o.port);
  await o.daemon.signal('SIGTERM');
  const config = fs.readFileSync(o.daemon.configFile); // the constructor below writes a fresh one: keep this
  const again = new DaemonProcess({}, o.daemon.dir);
  fs.writeFileSync(again.configFile, config);
  const t0 = performance.now();
  again.start();
  const marks: Record<string, number> = {};
  const deadline = Date.now() + 600_000;
  while (!marks.readyz && Date.now() < deadline) {
    // A daemon with an identity resumes from its local snapshot (no list); without one it lists.
    if (!marks.loaded && (again.log.includes('listed etcd') || again.log.includes('caught up from the local snapshot'))) marks.loaded = performance.now() - t0;
    if ((await status(o.port, '/readyz')) === 200) marks.readyz = performance.now() - t0;
    if (!again.running) throw new Error(`restarted daemon exited: ${again.log.slice(-2000)}`);
    await sleep(20);
  }
  // The restarted daemon's one-off work after ready, as above: its peak is read once the drift watch is up.
  const scanDeadline = Date.now() + 60_000;
  while (!again.log.includes('drift watch started') && Date.now() < scanDeadline && again.running) await sleep(100);
  await sleep(1000);
  const rewritten = await writes(o.port);
  const mode = await startMode(o.port);
  const usage = procUsage(pidOf(again));
  const s = (n: number | undefined) => (n === undefined ? 'n/a' : (n / 1000).toFixed(2));
  const text = [
    grid([
      ['with the keyspace loaded', 'value'],
      [`after ready: daemon CPU over the first ${o.settleSeconds} s (first local snapshot, drift watch's start)`, `${settleCpu.toFixed(2)} s`],
      [`peak RSS (VmHWM) from spawn to ${o.settleSeconds} s after ready (the cold start's own work included)`, `${settlePeak.toFixed(0)} MiB`],
      [`idle: daemon CPU over the ${o.idleSeconds} s after that (share of one core)`, `${((idleCpu / o.idleSeconds) * 100).toFixed(2)} %`],
      [`idle, steady: the next ${o.idleSeconds} s (the start's heap already shrunk)`, `${((steadyCpu / o.idleSeconds) * 100).toFixed(2)} %`],
      [`a change: daemon CPU per put (${o.puts} sequential puts to one object)`, `${perPut.toFixed(2)} ms`],
      ['a change: put → file p50 / p99', `${percentile(sorted, 50).toFixed(2)} / ${percentile(sorted, 99).toFixed(2)} ms`],
      ['restart (same files, etcd unchanged): started as (confsync_start_mode_total)', mode === 'snapshot-resume' ? 'snapshot-resume (watch resumed from the local snapshot, no list)' : (mode ?? 'n/a')],
      [`restart: spawn → state loaded ("${mode === 'snapshot-resume' ? 'caught up from the local snapshot' : 'listed etcd'}")`, `${s(marks.loaded)} s`],
      ['restart: spawn → /readyz 200', `${s(marks.readyz)} s`],
      ['restart: /readyz after the state was loaded', marks.readyz && marks.loaded ? `${s(marks.readyz - marks.loaded)} s` : 'n/a'],
      ['restart: objects rewritten (confsync_writes_total{sink="files"})', `${rewritten ?? 'n/a'} (before the restart the first daemon had written ${writesBefore ?? 'n/a'})`],
      ['restart: peak RSS (VmHWM), read 1 s after its drift watch started', `${usage.peakMiB.toFixed(0)} MiB`],
    ]),
  ].join('\n');
  return { text, daemon: again };
}

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function get(port: number, path: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ code: 0, body: '' }));
  });
}

async function status(port: number, path: string): Promise<number> {
  return (await get(port, path)).code;
}

/** The mode confsync_start_mode_total counted (offline is counted before one of the others: the last one wins). */
async function startMode(port: number): Promise<string | undefined> {
  const { code, body } = await get(port, '/metrics');
  if (code !== 200) return undefined;
  const counted = ['offline', 'list', 'snapshot-resume'].filter((m) => Number(body.match(new RegExp(`^confsync_start_mode_total\\{mode="${m}"\\} (\\d+)`, 'm'))?.[1] ?? 0) > 0);
  return counted.filter((m) => m !== 'offline').join('+') || counted[0];
}

/** confsync_writes_total{sink="files"} from /metrics. */
export async function writes(port: number): Promise<number | undefined> {
  const { code, body } = await get(port, '/metrics');
  if (code !== 200) return undefined;
  // A labelled counter has no sample until its first increment: absent means 0.
  return Number(body.match(/^confsync_writes_total\{sink="files"\} (\d+)/m)?.[1] ?? 0);
}
