/**
 * confd beside confsync: the same puts, watched by both, on one etcd.
 *
 *   node dist/bench/run.js --only confd   (200 sequential puts; --quick: 100)
 *   node dist/bench/confd.js --puts 200
 *
 * confd comes from scripts/confd.sh (built once from the Go module proxy into
 * ${CONFSYNC_CACHE:-~/.cache/confsync}; never in the repo). It runs in watch mode
 * on its etcd v3 backend with one template resource rendering the bench key to a
 * file (`{{getv "<key>"}}`); confd writes a staged temp file in the destination
 * dir and renames it over the target. confsync runs at the same time as a child
 * process, projecting the same key. The loop is put-to-file.ts's `putLoop`: each
 * put is awaited until the raw etcd watch, confsync's file and confd's file all
 * show it (each file: fs.watch on its dir plus a 2 ms poll). Both consumers
 * are woken by the same event and share the 2 cores.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../test/harness/etcd.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { percentile, table } from './stats.js';
import { BENCH_KEY, etcdVersion, fileObserver, flag, grid, isMain, pidOf, procUsage, putLoop, type ScenarioOptions } from './put-to-file.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** The confd binary (built if needed), or why not: the script's exact stderr. */
export function confdBinary(): { bin: string; version: string } | { error: string } {
  const r = spawnSync('bash', [path.join(REPO, 'scripts', 'confd.sh')], { encoding: 'utf8', timeout: 15 * 60_000 });
  const bin = r.stdout?.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !bin) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim() };
  const v = spawnSync(bin, ['-version'], { encoding: 'utf8' });
  return { bin, version: `${v.stdout}${v.stderr}`.trim().split('\n')[0] ?? 'unknown' };
}

export async function confd(opts: ScenarioOptions & { puts?: number }): Promise<string> {
  const puts = opts.puts ?? (opts.quick ? 100 : 200);
  const built = confdBinary();
  if ('error' in built) return `skipped: no confd binary. scripts/confd.sh said:\n${built.error}`;
  // kelseyhightower/confd calls its v3 backend "etcdv3"; the abtreece fork renamed it "etcd" (v2 is gone).
  const backend = built.bin.includes('kelseyhightower') ? 'etcdv3' : 'etcd';

  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-confd-'));
  const d = new DaemonProcess({ cluster: 'bench', log: { level: 'info' }, etcd: { endpoints: [etcd.endpoint] } }).start();
  let c: ChildProcess | undefined;
  let confdLog = '';
  try {
    const confdir = path.join(dir, 'confd');
    const outDir = path.join(dir, 'out');
    const target = path.join(outDir, 'value');
    fs.mkdirSync(path.join(confdir, 'conf.d'), { recursive: true });
    fs.mkdirSync(path.join(confdir, 'templates'));
    fs.mkdirSync(outDir);
    fs.writeFileSync(
      path.join(confdir, 'conf.d', 'bench.toml'),
      `[template]\nsrc = "bench.tmpl"\ndest = ${JSON.stringify(target)}\nmode = "0644"\nkeys = [${JSON.stringify(BENCH_KEY)}]\n`,
    );
    fs.writeFileSync(path.join(confdir, 'templates', 'bench.tmpl'), `{{getv ${JSON.stringify(BENCH_KEY)}}}`);
    const args = ['-backend', backend, '-node', etcd.endpoint, '-watch', '-confdir', confdir, '-config-file', path.join(confdir, 'confd.toml'), '-log-level', 'warn'];
    await client.put(BENCH_KEY).value('warmup');
    c = spawn(built.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout!.on('data', (b) => (confdLog += b));
    c.stderr!.on('data', (b) => (confdLog += b));
    await d.ready();
    const confsyncFile = d.file('configmaps', 'default', 'bench', 'value');
    await until(() => readOr(confsyncFile) === 'warmup', 'confsync warm-up');
    await until(() => readOr(target) === 'warmup' || (c!.exitCode !== null && Promise.reject(new Error(`confd exited: ${confdLog}`))), `confd warm-up (${confdLog})`);

    const before = { confsync: procUsage(pidOf(d)).cpuSeconds, confd: procUsage(c.pid!).cpuSeconds };
    const rows = await putLoop(client, BENCH_KEY, puts, [
      fileObserver('put → file (confsync)', d.file('configmaps', 'default', 'bench'), confsyncFile),
      fileObserver('put → file (confd)', outDir, target),
    ]);
    const cpu = { confsync: procUsage(pidOf(d)).cpuSeconds - before.confsync, confd: procUsage(c.pid!).cpuSeconds - before.confd };
    const sorted = rows.map((r) => [...r.samples].sort((a, b) => a - b));
    const ratio = (p: number) => `${(percentile(sorted[2]!, p) / percentile(sorted[1]!, p)).toFixed(1)}×`;
    return [
      `${puts} sequential puts to one key, 5 ms apart, each awaited until all three saw it; etcd ${etcdVersion()}; ${built.version} (${path.basename(path.dirname(built.bin))})`,
      `confd ${args.map((a) => (a.startsWith(dir) ? a.replace(dir, '$TMP') : a)).join(' ')}; template {{getv "<key>"}} → one file`,
      table(rows, 'etcd put → watch (floor)'),
      grid([
        ['', 'p50', 'p99', 'CPU ms per put'],
        ['confd ÷ confsync', ratio(50), ratio(99), ''],
        ['confsync (daemon process)', '', '', ((cpu.confsync * 1000) / puts).toFixed(2)],
        ['confd (process)', '', '', ((cpu.confd * 1000) / puts).toFixed(2)],
      ]),
    ].join('\n');
  } finally {
    if (c && c.exitCode === null) {
      const exited = new Promise((r) => c!.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    }
    client.close();
    await d.cleanup();
    await etcd.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(await confd({ quick: args.includes('--quick'), puts: Number(flag(args, '--puts')) || undefined }));
  process.exit(0);
}
