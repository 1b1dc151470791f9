/**
 * Templates (issue 15): render time over 1,000 objects, and put → rendered file
 * beside put → file in the same run.
 *
 *   node dist/bench/run.js --only template   (200 renders, 200 puts; --quick: 100 and 100)
 *   node dist/bench/template.js --puts 200
 *
 * (1) In this process: a confd-style upstream template ranging over 1,000
 *     ConfigMaps (`match`), rendered from scratch each time (the views are built
 *     per render, as in the daemon), beside a template reading one object.
 * (2) The daemon (child process, log level info) with the same 1,000 objects in
 *     etcd and one template that ranges over all of them and prints the bench
 *     key's value on its first line; each put of the bench key is awaited until
 *     the file sink's file and the rendered file both show it (fs.watch on the
 *     dir plus a 2 ms poll), so both latencies come from the same puts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import type { DesiredObject } from '../src/desired/types.js';
import { createEngine, parseTemplate, renderTemplate } from '../src/render/template.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { startEtcd } from '../test/harness/etcd.js';
import { BENCH_KEY, etcdVersion, fileObserver, flag, grid, isMain, ms, putLoop, withTimeout, type Observer, type ScenarioOptions } from './put-to-file.js';
import { percentile, table } from './stats.js';

const OBJECTS = 1000;
const UPSTREAM = `upstream app {
{%- assign webs = configmaps | match: "default/web-*" %}
{%- for w in webs %}
  server {{ w.keys.host }}:{{ w.keys.port | default: "80" }};
{%- endfor %}
}
`;

function renderRows(n: number): { name: string; samples: number[] }[] {
  const objects = new Map<string, DesiredObject>();
  for (let i = 0; i < OBJECTS; i++) {
    const name = `web-${String(i).padStart(4, '0')}`;
    const data = new Map([['host', Buffer.from(`10.0.${i >> 8}.${i & 255}`)], ['port', Buffer.from('8080')]]);
    objects.set(`configmaps/default/${name}`, { id: `configmaps/default/${name}`, kind: 'configmaps', namespace: 'default', name, data, labels: {}, annotations: {}, revision: 1, hash: name });
  }
  const engine = createEngine('error');
  const rows = [
    { name: `range over ${OBJECTS} objects (match + for)`, source: UPSTREAM },
    { name: 'one object by ref', source: 'host={{ configmaps["default/web-0500"].keys.host }}\n' },
  ];
  return rows.map(({ name, source }) => {
    const parsed = parseTemplate(engine, source);
    if ('error' in parsed) throw new Error(parsed.error);
    const samples: number[] = [];
    for (let i = 0; i < n + 20; i++) {
      const t0 = performance.now();
      const r = renderTemplate(engine, parsed.parsed, { objects, cluster: { name: 'bench', labels: {} }, secrets: 'deny' });
      const t = performance.now() - t0;
      if (!r.ok) throw new Error(r.error);
      if (i >= 20) samples.push(t); // the first renders warm the JIT
    }
    return { name, samples };
  });
}

/** Resolves when `file` starts with `<value>\n` (fs.watch on its dir plus a 2 ms poll). */
function firstLineObserver(name: string, file: string): Observer {
  return {
    name,
    expect: (value) =>
      withTimeout(
        new Promise<number>((resolve) => {
          const check = () => {
            if (!readOr(file)?.startsWith(`${value}\n`)) return;
            const t = performance.now();
            clearInterval(poll);
            w.close();
            resolve(t);
          };
          const w = fs.watch(path.dirname(file), check);
          w.on('error', () => undefined);
          const poll = setInterval(check, 2);
          check();
        }),
        `${file} to show ${value}`,
      ),
  };
}

export async function templateBench(opts: ScenarioOptions & { puts?: number }): Promise<string> {
  const n = opts.quick ? 100 : 200;
  const puts = opts.puts ?? n;
  const render = renderRows(n);
  const renderTable = grid([
    ['', 'n', 'median ms', 'p99 ms', 'max ms'],
    ...render.map((r) => {
      const s = [...r.samples].sort((a, b) => a - b);
      return [r.name, String(s.length), ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s.at(-1)!)];
    }),
  ]);

  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-bench-tpl-'));
  const tmpl = path.join(dir, 'upstream.liquid');
  const dest = path.join(dir, 'rendered', 'upstream.conf');
  fs.writeFileSync(tmpl, `{{ configmaps["default/bench"].keys.value }}\n${UPSTREAM}`);
  // 1,000 objects in transactions of 100 keys (etcd allows 128 operations per transaction).
  for (let i = 0; i < OBJECTS; i += 50) {
    const ops = [];
    for (let j = i; j < i + 50; j++) {
      const at = `/confsync/global/configmaps/default/web-${String(j).padStart(4, '0')}`;
      ops.push(client.put(`${at}/host`).value(`10.0.${j >> 8}.${j & 255}`), client.put(`${at}/port`).value('8080'));
    }
    await client.if('/confsync/never', 'Create', '==', 0).then(...ops).commit();
  }
  const d = new DaemonProcess({ cluster: 'bench', log: { level: 'info' }, etcd: { endpoints: [etcd.endpoint] }, templates: [{ name: 'upstream', source: tmpl, dest }] }, dir).start();
  try {
    await d.ready();
    const file = d.file('configmaps', 'default', 'bench', 'value');
    await client.put(BENCH_KEY).value('warmup');
    await until(() => readOr(file) === 'warmup' && readOr(dest)?.startsWith('warmup\n'), 'warm-up put', 60_000);
    const rows = await putLoop(client, BENCH_KEY, puts, [fileObserver('put → file (file sink)', d.file('configmaps', 'default', 'bench'), file), firstLineObserver(`put → rendered file (${OBJECTS} objects)`, dest)]);
    const p50 = (name: string) => percentile([...rows.find((r) => r.name.startsWith(name))!.samples].sort((a, b) => a - b), 50);
    return [
      `(1) render in process, ${n} renders after 20 warm-up, node ${process.version}`,
      renderTable,
      '',
      `(2) ${puts} sequential puts to one key, 5 ms apart; ${OBJECTS} other objects; one template reading all of them; the daemon a child process (log level info); loopback etcd ${etcdVersion()}`,
      table(rows, 'etcd put → watch (floor)'),
      `put → rendered file p50 ÷ put → file p50: ${(p50('put → rendered') / p50('put → file')).toFixed(2)}×`,
    ].join('\n');
  } finally {
    client.close();
    await d.cleanup();
    await etcd.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(`templates on this machine (${new Date().toISOString()})`);
  console.log(await templateBench({ quick: args.includes('--quick'), puts: Number(flag(args, '--puts')) || undefined }));
  process.exit(0);
}
