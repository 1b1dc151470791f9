/**
 * `npm run bench`: every scenario in sequence, each printing its own table
 * (package.json: "bench": "npm run build && node dist/bench/run.js"; the flags
 * below work the same on `node dist/bench/run.js`).
 *
 *   npm run bench                          the full suite (what docs/BENCHMARKS.md shows)
 *   npm run bench -- --quick               smaller N; the whole run in under 2 minutes
 *   npm run bench -- --only burst,confd    some scenarios (names below)
 *
 * Benchmarks print, they never assert (STYLE.md): every latency table carries a
 * baseline measured in the same run. Machine facts come first so a table is never
 * read without the machine it came from. A scenario that fails prints why and the
 * others still run; the exit code is 1 then.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { burst } from './burst.js';
import { coldStart } from './cold-start.js';
import { confd } from './confd.js';
import { consoleBench } from './console.js';
import { fanOut } from './fan-out.js';
import { etcdBin, etcdVersion, flag, fsType, putToFile, spawnText, type ScenarioOptions } from './put-to-file.js';
import { putToConfigMap } from './put-to-configmap.js';
import { snapshotBench } from './snapshot.js';
import { templateBench } from './template.js';

const SCENARIOS: { name: string; title: string; run: (o: ScenarioOptions) => Promise<string> }[] = [
  { name: 'put-to-file', title: '1. put → file, beside the etcd put → watch floor', run: putToFile },
  { name: 'put-to-configmap', title: '2. put → ConfigMap on a real kube-apiserver', run: putToConfigMap },
  { name: 'confd', title: '3. confd (watch mode, etcd v3 backend) beside confsync, same puts', run: confd },
  { name: 'cold-start', title: '4. cold start against a full keyspace', run: coldStart },
  { name: 'burst', title: '5. burst: many updates to few objects', run: burst },
  { name: 'fan-out', title: '6. fan-out: one put, many daemons', run: fanOut },
  { name: 'snapshot', title: '7. fail-safes: snapshot write, mass-delete hold/release, reboot with etcd down', run: snapshotBench },
  { name: 'template', title: '8. templates: render over 1,000 objects; put → rendered file beside put → file', run: templateBench },
  { name: 'console', title: '9. console: first paint with 50 × 20 nodes and 10,000 objects, a 1,000 events/s stream (chromium)', run: consoleBench },
];

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const only = flag(args, '--only')?.split(',').map((s) => s.trim());
const unknown = only?.filter((n) => !SCENARIOS.some((s) => s.name === n)) ?? [];
if (unknown.length > 0 || args.includes('--help')) {
  console.error(`${unknown.length ? `unknown scenario(s): ${unknown.join(', ')}\n` : ''}usage: npm run bench [-- --quick] [-- --only ${SCENARIOS.map((s) => s.name).join(',')}]`);
  process.exit(2);
}

console.log(machineFacts(quick));
const t0 = performance.now();
let failed = 0;
for (const s of SCENARIOS) {
  if (only && !only.includes(s.name)) continue;
  console.log(`\n## ${s.title}  [${s.name}]\n`);
  const ts = performance.now();
  try {
    console.log(await s.run({ quick }));
  } catch (err) {
    failed++;
    console.log(`FAILED: ${(err as Error).stack ?? err}`);
  }
  console.log(`(${((performance.now() - ts) / 1000).toFixed(1)} s)`);
}
console.log(`\nbench ${quick ? '--quick ' : ''}done in ${((performance.now() - t0) / 1000).toFixed(1)} s; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}${failed ? `; ${failed} scenario(s) FAILED` : ''}`);
// etcd3's gRPC sockets may keep the loop alive for seconds after the last close.
process.exit(failed ? 1 : 0);

function machineFacts(quick: boolean): string {
  const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.+)/)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const kube = (() => {
    const cache = process.env.CONFSYNC_CACHE ?? path.join(os.homedir(), '.cache', 'confsync');
    const dirs = fs.existsSync(cache) ? fs.readdirSync(cache).filter((d) => d.startsWith('kube-apiserver-')) : [];
    return dirs.length ? dirs.map((d) => d.replace('kube-apiserver-', '')).join(', ') + ' (cached)' : 'none cached';
  })();
  const rows = [
    ['date', new Date().toISOString()],
    ['mode', quick ? '--quick (smaller N)' : 'full'],
    ['cores (nproc)', `${os.availableParallelism()} × ${cpu}`],
    ['memory', `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['kernel', `${os.type()} ${os.release()}`],
    ['node', process.version],
    ['etcd', `${etcdVersion()} (${spawnText(etcdBin(), ['--version']).match(/Go Version: (\S+)/)?.[1] ?? '?'})`],
    ['etcdctl', spawnText('etcdctl', ['version']).match(/etcdctl version: (\S+)/)?.[1] ?? 'unknown'],
    ['kube-apiserver', kube],
    ['load average', `${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (1/5/15 min, at start: other processes on the machine skew every number)`],
    ['os.tmpdir()', `${os.tmpdir()} (${fsType(os.tmpdir())}); /dev/shm (${fsType('/dev/shm')})`],
  ];
  const w = Math.max(...rows.map((r) => r[0]!.length));
  return ['# confsync benchmarks', '', ...rows.map(([k, v]) => `${k!.padEnd(w)}  ${v}`)].join('\n');
}
