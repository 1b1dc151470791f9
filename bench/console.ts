/**
 * The console under a large fleet, in Debian's chromium (issue 17's targets):
 *
 *   node dist/bench/run.js --only console         (full: 50 clusters × 20 nodes, 10,000 objects, 1,000 puts/s for 10 s)
 *   node dist/bench/console.js [--quick] [--loads N]   (--quick: the same fleet, 3 s of stream; --loads: page loads, default 5)
 *
 *  (1) etcd holds 1,000 status keys (50 × 20, as daemons write them) and 10,000
 *      objects (one key each); the console starts and lists them;
 *  (2) first paint: navigation start → the matrix's first render with rows (the
 *      page's `matrix-rendered` mark), over 5 fresh page loads (p99 is the nearest
 *      rank, so the max of 5: --loads 20 or more gives it meaning); beside it the
 *      browser's first contentful paint of the same loads (the floor: the page's
 *      own HTML, before any data);
 *  (3) stream: puts at 1,000/s (10 every 10 ms, paced) for 10 s with the event list
 *      open; in the page a rAF loop records every frame gap and a PerformanceObserver
 *      every long task (> 50 ms); Pause/Resume clicked mid-stream, timed to the
 *      rendered change (the tab answering input while the stream runs).
 * Prints; asserts nothing. Writes docs/console/fleet.png (the README's picture).
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { CHROMIUM, launchChromium, startConsole } from '../test/harness/console.js';
import { startEtcd } from '../test/harness/etcd.js';
import { grid, isMain, ms, pool, procUsage, type ScenarioOptions } from './put-to-file.js';
import { percentile } from './stats.js';

const P = '/confsync';

function status(cluster: string, node: string, revision: number, extra: Record<string, unknown> = {}): string {
  const now = new Date().toISOString();
  return JSON.stringify({ cluster, node, revision, updatedAt: now, startedAt: now, objects: 10_000, errors: 0, failing: 0, state: 'watching', ready: true, version: 'bench', ...extra });
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? 0 };
};

export async function consoleBench(o: ScenarioOptions & { clusters?: number; nodes?: number; objects?: number; seconds?: number; rate?: number; loads?: number }): Promise<string> {
  const clusters = o.clusters ?? 50;
  const nodes = o.nodes ?? 20;
  const objects = o.objects ?? 10_000;
  const seconds = o.seconds ?? (o.quick ? 3 : 10);
  const rate = o.rate ?? 1000;
  const loads = o.loads ?? 5;
  const load0 = os.loadavg()[0]!;
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  let con: Awaited<ReturnType<typeof startConsole>> | undefined;
  const browser = await launchChromium();
  try {
    // (1)
    const puts: [string, string][] = [];
    for (let i = 0; i < objects; i++) puts.push([`${P}/global/configmaps/ns-${i % 20}/obj-${i}/k`, `value ${i} `.padEnd(100, 'x')]);
    await pool(puts, 64, async ([k, v]) => void (await client.put(k).value(v)));
    const head = Number((await client.get(`${P}/none`).exec()).header.revision);
    const statuses: [string, string][] = [];
    for (let c = 0; c < clusters; c++) for (let n = 0; n < nodes; n++) statuses.push([`${P}/status/c-${c}/n-${n}`, status(`c-${c}`, `n-${n}`, head - (n % 4 === 0 ? 5 : 0))]);
    await pool(statuses, 64, async ([k, v]) => void (await client.put(k).value(v)));
    con = await startConsole(['--listen', '127.0.0.1:0', '--endpoints', etcd.endpoint], 60_000);

    // (2)
    const paints: number[] = [];
    const fcps: number[] = [];
    const apps: number[] = [];
    const hellos: number[] = [];
    const parses: number[] = [];
    const completes: number[] = [];
    for (let i = 0; i < loads; i++) {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await page.goto(con.url);
      await page.waitForFunction(() => document.body.dataset.matrix === 'ready', undefined, { timeout: 30_000 });
      await page.waitForFunction(() => document.body.dataset.matrixComplete === 'ready', undefined, { timeout: 30_000 });
      const [mark, fcp, app, hello, parsed, complete] = await page.evaluate(() =>
        ['matrix-rendered', 'first-contentful-paint', 'app-start', 'hello-received', 'hello-parsed', 'matrix-complete'].map((n) => performance.getEntriesByName(n)[0]?.startTime ?? NaN),
      );
      paints.push(mark!);
      fcps.push(fcp!);
      apps.push(app!);
      hellos.push(hello!);
      parses.push(parsed! - hello!);
      completes.push(complete!);
      await page.close();
    }

    // The README's picture of a fleet: fresh statuses, every fourth node 5 revisions behind,
    // one reporting an error, one not heard from for a minute, one stopped.
    await pool(statuses, 64, async ([k]) => {
      const [, , , c, n] = k.split('/');
      const nn = Number(n!.slice(2));
      const extra =
        c === 'c-1' && n === 'n-6' ? { errors: 2, lastError: { path: 'global/secrets/default/db/password', reason: 'envelope cannot be opened (not-a-recipient)' } }
        : c === 'c-2' && n === 'n-9' ? { updatedAt: new Date(Date.now() - 60_000).toISOString() }
        : {};
      await client.put(k).value(status(c!, n!, head - (nn % 4 === 0 ? 5 : 0), extra));
    });
    await client.delete().key(`${P}/status/c-0/n-13`);
    const shot = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await shot.goto(con.url);
    await shot.waitForFunction(() => document.body.dataset.matrixComplete === 'ready', undefined, { timeout: 30_000 });
    await shot.screenshot({ path: fileURLToPath(new URL('../../docs/console/fleet.png', import.meta.url)) });
    await shot.close();

    // (3)
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${con.url}#/events`);
    await page.waitForSelector('[data-testid=pause]');
    await page.evaluate(() => {
      const w = window as unknown as { gaps: number[]; longTasks: number[]; stop: boolean };
      w.gaps = [];
      w.longTasks = [];
      w.stop = false;
      new PerformanceObserver((list) => list.getEntries().forEach((e) => w.longTasks.push(e.duration))).observe({ type: 'longtask', buffered: false });
      let last = performance.now();
      const loop = (t: number) => {
        w.gaps.push(t - last);
        last = t;
        if (!w.stop) requestAnimationFrame(loop);
      };
      requestAnimationFrame(loop);
    });
    const rssBefore = procUsage(con.proc.pid!);
    const total = rate * seconds;
    const t0 = performance.now();
    let sent = 0;
    const inflight = new Set<Promise<unknown>>();
    const clicks: number[] = [];
    let clicked = false;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 10);
      for (; sent < due; sent++) {
        const p: Promise<unknown> = client.put(`${P}/global/configmaps/ns-${sent % 20}/obj-${sent % objects}/k`).value(`stream ${sent}`).exec();
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      if (!clicked && performance.now() - t0 > (seconds * 1000) / 2) {
        clicked = true;
        for (const sel of ['.pending.on', '.pending:not(.on)']) {
          const c0 = performance.now();
          await page.click('[data-testid=pause]');
          await page.waitForSelector(sel);
          clicks.push(performance.now() - c0);
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inflight);
    const elapsed = (performance.now() - t0) / 1000;
    const shown = await page.evaluate(() => {
      const w = window as unknown as { gaps: number[]; longTasks: number[]; stop: boolean };
      w.stop = true;
      return { gaps: w.gaps, longTasks: w.longTasks, text: document.querySelector('[data-testid=shown]')?.textContent ?? '' };
    });
    const rssAfter = procUsage(con.proc.pid!);
    const p = stats(paints);
    const f = stats(fcps);
    const g = stats(shown.gaps);
    const over50 = shown.gaps.filter((x) => x > 50).length;
    return [
      `fleet: ${clusters} clusters × ${nodes} nodes (status keys), ${objects.toLocaleString()} objects; chromium ${CHROMIUM}, headless; load average ${load0.toFixed(1)} → ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores`,
      '',
      grid([
        [`first paint (${loads} loads)`, 'p50 ms', 'p99 ms', 'max ms'],
        ...([
          ['navigation → first contentful paint (floor)', f],
          ['navigation → page script running (modules loaded)', stats(apps)],
          ['navigation → first stream message (matrix + recent events)', stats(hellos)],
          ['  of which JSON.parse of that message', stats(parses)],
          ['navigation → matrix painted (first screenful: 5 clusters × 20 nodes)', p],
          [`navigation → all ${clusters} × ${nodes} cells rendered`, stats(completes)],
        ] as const).map(([name, x]) => [name, ms(x.p50), ms(x.p99), ms(x.max)]),
      ]),
      '',
      `stream: ${sent.toLocaleString()} puts in ${elapsed.toFixed(1)} s (${Math.round(sent / elapsed)}/s), event list open`,
      grid([
        ['in the tab', 'value'],
        ['frames', String(shown.gaps.length)],
        ['frame gap p50 / p99 / max', `${ms(g.p50)} / ${ms(g.p99)} / ${ms(g.max)} ms`],
        ['frame gaps > 50 ms', String(over50)],
        ['long tasks (> 50 ms): count, total', `${shown.longTasks.length}, ${ms(shown.longTasks.reduce((a, b) => a + b, 0))} ms`],
        ['click Pause → shown, Resume → shown', clicks.map((c) => `${ms(c)} ms`).join(', ')],
        ['list after the stream', shown.text],
        ['console process: CPU during the stream, RSS before → after', `${Math.round(((rssAfter.cpuSeconds - rssBefore.cpuSeconds) / elapsed) * 100)} % of a core, ${rssBefore.rssMiB.toFixed(0)} → ${rssAfter.rssMiB.toFixed(0)} MiB`],
      ]),
    ].join('\n');
  } finally {
    await browser.close();
    await con?.stop();
    client.close();
    await etcd.stop();
  }
}

const loadsArg = process.argv.indexOf('--loads');
if (isMain(import.meta.url)) console.log(await consoleBench({ quick: process.argv.includes('--quick'), loads: loadsArg > 0 ? Number(process.argv[loadsArg + 1]) : undefined }));
