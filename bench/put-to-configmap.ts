/**
 * put → ConfigMap on a real kube-apiserver, beside the etcd floor and an
 * apiserver floor, in the same run.
 *
 *   node dist/bench/run.js --only put-to-configmap   (200 sequential puts; --quick: 100)
 *   node dist/bench/put-to-configmap.js --puts 200
 *
 * kube-apiserver (+ its own etcd) from test/harness/kube.ts; deploy/kubernetes'
 * namespace, ServiceAccount and RBAC applied with `kubectl apply --server-side` as
 * test/kubernetes.test.ts does; the daemon (a child process) authenticates as that
 * ServiceAccount, with leader election on and both sinks, like the DaemonSet's
 * config (files first, then the ConfigMap, per object).
 *
 * "put → ConfigMap" is when this process's WATCH on the apiserver
 * (GET …/configmaps?watch=1, one long-lived stream, admin credentials) delivers
 * the ConfigMap with the new value — not polling. The apiserver floor: this
 * process server-side-applies a ConfigMap itself (keep-alive connection) and
 * times until the same watch delivers it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../test/harness/etcd.js';
import { startKubeApiserver, type KubeHandle } from '../test/harness/kube.js';
import { DaemonProcess, readOr, until } from '../test/harness/daemon.js';
import { percentile, table } from './stats.js';
import { BENCH_KEY, etcdVersion, fileObserver, flag, isMain, pidOf, procUsage, putLoop, withTimeout, type ScenarioOptions } from './put-to-file.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DEPLOY = path.join(REPO, 'deploy', 'kubernetes');
const NS = 'default';

/**
 * Why the bench cannot have a kube-apiserver, or undefined when it can. In quick
 * mode only a binary that is already there counts (building one takes minutes).
 */
export function kubeUnavailable(quick: boolean): string | undefined {
  if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) return 'kubectl not found (apt-get install -y kubectl)';
  const assets = process.env.KUBEBUILDER_ASSETS;
  if (assets && fs.existsSync(path.join(assets, 'kube-apiserver'))) return undefined;
  const script = fs.readFileSync(path.join(REPO, 'scripts', 'kube-apiserver.sh'), 'utf8');
  const version = process.env.KUBE_APISERVER_VERSION ?? script.match(/KUBE_APISERVER_VERSION:-(v[\d.]+)/)?.[1];
  const cache = process.env.CONFSYNC_CACHE ?? path.join(os.homedir(), '.cache', 'confsync');
  if (version && fs.existsSync(path.join(cache, `kube-apiserver-${version}`, 'kube-apiserver'))) return undefined;
  const go = spawnSync('sh', ['-c', 'command -v go || test -x /usr/local/go/bin/go'], { encoding: 'utf8' }).status === 0;
  if (!go) return 'no kube-apiserver binary (KUBEBUILDER_ASSETS or the cache) and no Go toolchain to build one';
  if (quick) return `no cached kube-apiserver ${version} and --quick does not build one (scripts/kube-apiserver.sh takes minutes; run the full bench once)`;
  return undefined;
}

export async function putToConfigMap(opts: ScenarioOptions & { puts?: number }): Promise<string> {
  const puts = opts.puts ?? (opts.quick ? 100 : 200);
  const why = kubeUnavailable(opts.quick);
  if (why) return `skipped: ${why}`;
  let kube: KubeHandle | undefined;
  let watch: ConfigMapWatch | undefined;
  let d: DaemonProcess | undefined;
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  try {
    kube = await startKubeApiserver();
    for (const f of ['namespace.yaml', 'serviceaccount.yaml', 'rbac.yaml']) {
      const r = spawnSync('kubectl', ['--kubeconfig', kube.adminKubeconfig, 'apply', '--server-side', '-f', path.join(DEPLOY, f)], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`kubectl apply ${f}: ${r.stderr}`);
    }
    const kubeconfig = await kube.kubeconfigFor({ namespace: 'confsync', name: 'confsync' });
    const tls = { ca: fs.readFileSync(kube.caFile), cert: fs.readFileSync(kube.adminCertFile), key: fs.readFileSync(kube.adminKeyFile) };
    const agent = new https.Agent({ ...tls, keepAlive: true });
    watch = await watchConfigMaps(kube.url, tls);

    d = new DaemonProcess({
      cluster: 'bench',
      log: { level: 'info' },
      etcd: { endpoints: [etcd.endpoint] },
      sinks: { kubernetes: { enabled: true, kubeconfig, leaderElection: { namespace: 'confsync' } } },
    }).start();
    await d.ready();
    const file = d.file('configmaps', NS, 'bench', 'value');
    const warm = watch.expect('bench', 'warmup', 60_000);
    await client.put(BENCH_KEY).value('warmup');
    await until(() => readOr(file) === 'warmup', 'warm-up file');
    await warm.catch((err: Error) => {
      throw new Error(`${err.message}; daemon log tail:\n${d!.log.slice(-3000)}`);
    }); // the daemon is the leader and its informers are up

    const w = watch;
    const cpuBefore = procUsage(pidOf(d)).cpuSeconds;
    const rows = await putLoop(client, BENCH_KEY, puts, [
      fileObserver('put → file (same daemon)', d.file('configmaps', NS, 'bench'), file),
      { name: 'put → ConfigMap (apiserver watch)', expect: (value) => w.expect('bench', value) },
    ]);

    // Over the put loop (no floor loop yet): each put's writes, and what the daemon's informer hears of them.
    const cpuPerPut = ((procUsage(pidOf(d)).cpuSeconds - cpuBefore) * 1000) / puts;

    // the apiserver floor: our own server-side apply → the same watch
    const floor: number[] = [];
    for (let i = 0; i < puts; i++) {
      const value = `a${i}`;
      const seen = w.expect('floor', value);
      const t0 = performance.now();
      await apply(kube.url, agent, 'floor', value);
      floor.push((await seen) - t0);
      await sleep(5);
    }
    agent.destroy();
    const cm = [...rows[2]!.samples].sort((a, b) => a - b);
    const p99 = percentile(cm, 99);
    return [
      `${puts} sequential puts to one key, 5 ms apart; daemon as a child process with files + kubernetes sinks (ServiceAccount of deploy/kubernetes, leader election on); kube-apiserver ${kube.version}; etcd ${etcdVersion()} for both`,
      table(rows, 'etcd put → watch (floor)'),
      '',
      table([{ name: 'SSA → watch by the bench (apiserver floor)', samples: floor }, { name: 'put → ConfigMap (apiserver watch)', samples: rows[2]!.samples }], 'SSA → watch by the bench (apiserver floor)'),
      `target p99 < 100 ms: ${p99 < 100 ? 'met' : 'NOT met'} (p99 ${p99.toFixed(1)} ms)`,
      `daemon CPU per put (files + kubernetes sinks, its informer's events included): ${cpuPerPut.toFixed(2)} ms`,
    ].join('\n');
  } finally {
    watch?.close();
    client.close();
    await d?.cleanup();
    await etcd.stop();
    await kube?.stop();
  }
}

interface ConfigMapWatch {
  /** Resolves with the time the watch delivered ConfigMap `name` with data.value === value. */
  expect(name: string, value: string, timeoutMs?: number): Promise<number>;
  close(): void;
}

/**
 * A watch on the namespace's ConfigMaps that reconnects (list, then watch from the
 * list's resourceVersion) when the apiserver ends the stream or sends an ERROR — a
 * fresh apiserver answers "Too large resource version" until its watch cache has
 * caught up. Resolves once an object this process applied came through the stream.
 */
async function watchConfigMaps(base: string, tls: https.AgentOptions): Promise<ConfigMapWatch> {
  const waiters = new Map<string, (t: number) => void>();
  const agent = new https.Agent(tls);
  let req: ReturnType<typeof https.get> | undefined;
  let closed = false;
  const connect = async (): Promise<void> => {
    if (closed) return;
    const list = await getJson(base, agent, `/api/v1/namespaces/${NS}/configmaps`).catch(() => undefined);
    const rv = list?.metadata?.resourceVersion ?? '';
    const again = () => {
      if (!closed) setTimeout(() => void connect(), 100);
    };
    req = https.get(`${base}/api/v1/namespaces/${NS}/configmaps?watch=1&resourceVersion=${rv}`, { agent }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return again();
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const t = performance.now();
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line) as { type: string; object: { metadata?: { name?: string }; data?: Record<string, string> } };
          if (ev.type === 'ERROR') {
            req?.destroy();
            return;
          }
          const key = `${ev.object.metadata?.name}\0${ev.object.data?.value}`;
          waiters.get(key)?.(t);
          waiters.delete(key);
        }
      });
      res.on('close', again);
    });
    req.on('error', () => undefined); // 'close' follows and reconnects
  };
  const watch: ConfigMapWatch = {
    expect(name, value, timeoutMs = 15_000) {
      return withTimeout(new Promise<number>((r) => waiters.set(`${name}\0${value}`, r)), `ConfigMap ${name} = ${value} on the watch`, timeoutMs);
    },
    close() {
      closed = true;
      req?.destroy();
      agent.destroy();
    },
  };
  await connect();
  const probe = `${Date.now()}`;
  const seen = watch.expect('probe', probe, 60_000);
  await apply(base, agent, 'probe', probe);
  await seen;
  return watch;
}

function getJson(base: string, agent: https.Agent, urlPath: string): Promise<any> {
  return new Promise((resolve, reject) => {
    https
      .get(`${base}${urlPath}`, { agent }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`GET ${urlPath}: HTTP ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

function apply(base: string, agent: https.Agent, name: string, value: string): Promise<void> {
  const body = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: NS }, data: { value } });
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${base}/api/v1/namespaces/${NS}/configmaps/${name}?fieldManager=bench&force=true`,
      { method: 'PATCH', agent, headers: { 'Content-Type': 'application/apply-patch+yaml', 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 || res.statusCode === 201 ? resolve() : reject(new Error(`apply: HTTP ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  console.log(await putToConfigMap({ quick: args.includes('--quick'), puts: Number(flag(args, '--puts')) || undefined }));
  process.exit(0);
}
