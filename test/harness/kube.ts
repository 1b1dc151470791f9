// Test harness: a real kube-apiserver backed by its own etcd, on loopback.
//
//   const kube = await startKubeApiserver();
//   ... kube.url, kube.caFile, kube.adminKubeconfig, await kube.kubeconfigFor({namespace, name})
//   await kube.restart();   // kube-apiserver only; same port, same etcd
//   await kube.stop();      // kills both, removes kube.dir
//
// The kube-apiserver binary comes from scripts/kube-apiserver.sh (honours
// KUBEBUILDER_ASSETS, else a cached build, else builds it once from the Go module
// proxy — the first run can take 10–20 minutes). etcd is /usr/bin/etcd unless
// $KUBEBUILDER_ASSETS/etcd or $CONFSYNC_ETCD points elsewhere.
//
// No controller-manager runs: namespaces never finish deleting, no "default"
// ServiceAccount appears in new namespaces (kubeconfigFor creates the SA it needs),
// and no garbage collection happens.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);

export interface ServiceAccountRef {
  namespace: string;
  name: string;
}

export interface KubeResponse {
  status: number;
  /** Parsed JSON body when the response was JSON, else the raw text. */
  body: any;
}

export interface KubeHandle {
  /** https://127.0.0.1:<port> */
  url: string;
  /** PEM CA that signed the serving cert (and the client certs). */
  caFile: string;
  /** kubeconfig with a client cert in group system:masters. */
  adminKubeconfig: string;
  /** Admin client cert/key PEM files (same identity as adminKubeconfig). */
  adminCertFile: string;
  adminKeyFile: string;
  /** http://127.0.0.1:<port> of the private etcd. */
  etcdUrl: string;
  /** Temp dir holding certs, etcd data, logs; removed by stop(). */
  dir: string;
  /** kube-apiserver log (stdout+stderr); survives restart(), removed by stop(). */
  logFile: string;
  /** Version reported by /version, e.g. "v1.34.4". */
  version: string;
  /**
   * Kubeconfig using a TokenRequest token (1 h) for the ServiceAccount; creates the
   * namespace and the ServiceAccount if missing. Each call writes a new file.
   */
  kubeconfigFor(serviceAccount: ServiceAccountRef): Promise<string>;
  /** Raw request with admin credentials. body is JSON-encoded unless a string. */
  request(method: string, urlPath: string, body?: unknown, contentType?: string): Promise<KubeResponse>;
  /** Stop kube-apiserver (SIGTERM, SIGKILL after 10 s) and start it again; etcd untouched. */
  restart(): Promise<void>;
  /** Kill kube-apiserver and etcd, remove dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Parent directory for the harness temp dir (default os.tmpdir()). */
  dataDir?: string;
  /** Extra kube-apiserver flags (appended; later flags win). */
  extraArgs?: string[];
  /** Readiness timeout for kube-apiserver, ms (default 60 000). */
  readyTimeoutMs?: number;
}

// dist/test/harness/kube.js → repo root is three levels up.
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave orphaned etcd/kube-apiserver behind if a test dies.
  const killAll = () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (process.env.CONFSYNC_KEEP_KUBE_DIR) return;
    for (const d of liveDirs) {
      try {
        fs.rmSync(d, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        /* best effort */
      }
    }
  };
  process.on('exit', killAll);
  // Signals skip 'exit'. Only hook a signal nobody else handles, then re-raise it so
  // the default behaviour (terminate) is unchanged.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    if (process.listenerCount(sig) > 0) continue;
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

/** Runs scripts/kube-apiserver.sh; its progress (possibly a long build) goes to our stderr. */
export async function kubeApiserverBinary(): Promise<string> {
  const script = path.join(REPO_ROOT, 'scripts', 'kube-apiserver.sh');
  return await new Promise<string>((resolve, reject) => {
    const child = spawn('bash', [script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const bin = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !bin) reject(new Error(`${script} failed (exit ${code}); stdout: ${JSON.stringify(out)}`));
      else resolve(bin);
    });
  });
}

function etcdBinary(): string {
  if (process.env.CONFSYNC_ETCD) return process.env.CONFSYNC_ETCD;
  const assets = process.env.KUBEBUILDER_ASSETS;
  if (assets) {
    const p = path.join(assets, 'etcd');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* fall through */
    }
  }
  return '/usr/bin/etcd';
}

async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileP('openssl', args, { cwd });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

interface Pki {
  caCrt: string;
  serverCrt: string;
  serverKey: string;
  adminCrt: string;
  adminKey: string;
  saKey: string;
  saPub: string;
}

/** EC P-256 everywhere: fast to generate, accepted by kube-apiserver (ES256 SA tokens) and node TLS. */
async function makePki(dir: string): Promise<Pki> {
  const cnf = path.join(dir, 'openssl.cnf');
  await fsp.writeFile(cnf, OPENSSL_CNF, { mode: 0o600 });
  const genkey = (name: string) =>
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name], dir);
  const serial = () => '0x' + randomBytes(16).toString('hex').replace(/^./, '1');
  await Promise.all([genkey('ca.key'), genkey('server.key'), genkey('admin.key'), genkey('sa.key')]);
  await openssl(
    ['req', '-x509', '-new', '-sha256', '-key', 'ca.key', '-config', cnf, '-extensions', 'v3_ca',
      '-subj', '/CN=confsync-test-ca', '-days', '30', '-set_serial', serial(), '-out', 'ca.crt'],
    dir,
  );
  const leaf = async (name: string, subj: string, ext: string) => {
    await openssl(['req', '-new', '-sha256', '-key', `${name}.key`, '-config', cnf, '-subj', subj, '-out', `${name}.csr`], dir);
    await openssl(
      ['x509', '-req', '-sha256', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', serial(),
        '-days', '30', '-extfile', cnf, '-extensions', ext, '-out', `${name}.crt`],
      dir,
    );
  };
  await Promise.all([
    leaf('server', '/CN=kube-apiserver', 'v3_server'),
    leaf('admin', '/O=system:masters/CN=confsync-test-admin', 'v3_client'),
    openssl(['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir),
  ]);
  for (const f of await fsp.readdir(dir)) await fsp.chmod(path.join(dir, f), 0o600);
  const p = (f: string) => path.join(dir, f);
  return {
    caCrt: p('ca.crt'),
    serverCrt: p('server.crt'),
    serverKey: p('server.key'),
    adminCrt: p('admin.crt'),
    adminKey: p('admin.key'),
    saKey: p('sa.key'),
    saPub: p('sa.pub'),
  };
}

function b64(s: string | Buffer): string {
  return Buffer.from(s).toString('base64');
}

function kubeconfigYaml(server: string, caPem: string, user: string, auth: Record<string, string>): string {
  const authLines = Object.entries(auth)
    .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)
    .join('\n');
  // JSON strings are valid YAML scalars: safe quoting for names with ':'.
  const q = (s: string) => JSON.stringify(s);
  return `apiVersion: v1
kind: Config
clusters:
- name: confsync-test
  cluster:
    server: ${q(server)}
    certificate-authority-data: ${b64(caPem)}
users:
- name: ${q(user)}
  user:
${authLines}
contexts:
- name: ${q(user + '@confsync-test')}
  context:
    cluster: confsync-test
    user: ${q(user)}
current-context: ${q(user + '@confsync-test')}
`;
}

async function portClash(logFile: string): Promise<boolean> {
  try {
    return /address already in use/.test(await fsp.readFile(logFile, 'utf8'));
  } catch {
    return false;
  }
}

/** Error/fatal lines (klog E/F, "Error:", panics) followed by the last lines of the log. */
async function tail(file: string, lines = 25): Promise<string> {
  try {
    const all = (await fsp.readFile(file, 'utf8')).split('\n');
    const errors = all.filter((l) => /^[EF]\d{4} |^Error:|^panic:|"level":"(error|fatal|panic)"/.test(l)).slice(-10);
    return [
      ...(errors.length ? ['errors:', ...errors, `last ${lines} lines of ${path.basename(file)}:`] : []),
      ...all.slice(-lines),
    ].join('\n');
  } catch {
    return '(no log)';
  }
}

interface Proc {
  child: ChildProcess;
  exited: Promise<number | null>;
  exitCode: number | null | undefined;
}

function launch(bin: string, args: string[], logFile: string): Proc {
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  live.add(child);
  const proc: Proc = { child, exited: undefined as unknown as Promise<number | null>, exitCode: undefined };
  proc.exited = new Promise((resolve) => {
    child.on('error', (e) => {
      fs.appendFileSync(logFile, `\nspawn error: ${e.message}\n`);
      proc.exitCode = -1;
      live.delete(child);
      resolve(-1);
    });
    child.on('exit', (code, signal) => {
      proc.exitCode = code ?? (signal ? 128 : null);
      live.delete(child);
      resolve(proc.exitCode);
    });
  });
  return proc;
}

/** SIGTERM (or SIGKILL when graceMs is 0), SIGKILL after graceMs; resolves once the process is gone. */
async function terminate(p: Proc | undefined, graceMs: number): Promise<void> {
  if (!p || p.exitCode !== undefined) return;
  p.child.kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([
    p.exited.then(() => true),
    // Cleared below: a pending grace timer would keep the test process alive.
    new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs))),
  ]);
  clearTimeout(timer);
  if (!done) {
    p.child.kill('SIGKILL');
    await p.exited;
  }
}

export async function startKubeApiserver(opts: StartOptions = {}): Promise<KubeHandle> {
  installExitHook();
  const t0 = Date.now();
  const apiserverBin = await kubeApiserverBinary();
  const etcdBin = etcdBinary();

  const parent = opts.dataDir ?? os.tmpdir();
  await fsp.mkdir(parent, { recursive: true });
  const dir = await fsp.mkdtemp(path.join(parent, 'confsync-kube-'));
  await fsp.chmod(dir, 0o700);
  liveDirs.add(dir);
  const pkiDir = path.join(dir, 'pki');
  const etcdDir = path.join(dir, 'etcd');
  await fsp.mkdir(pkiDir, { mode: 0o700 });
  await fsp.mkdir(etcdDir, { mode: 0o700 });
  const logFile = path.join(dir, 'kube-apiserver.log');
  const etcdLog = path.join(dir, 'etcd.log');

  let etcd: Proc | undefined;
  let apiserver: Proc | undefined;
  let stopped = false;

  const cleanup = async () => {
    // Nothing is kept after stop(), so no graceful shutdown for kube-apiserver.
    await terminate(apiserver, 0);
    await terminate(etcd, 5_000);
    if (!process.env.CONFSYNC_KEEP_KUBE_DIR) await fsp.rm(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  };

  try {
    const pki = await makePki(pkiDir);

    // ---- etcd. Ports come from "listen on :0, close": another process can grab one
    // before we bind it, so a bind failure is retried with fresh ports.
    let etcdUrl = '';
    for (let attempt = 1; ; attempt++) {
      const [client, peer] = await distinctFreePorts(2);
      etcdUrl = `http://127.0.0.1:${client}`;
      await fsp.rm(etcdDir, { recursive: true, force: true });
      await fsp.mkdir(etcdDir, { mode: 0o700 });
      etcd = launch(
        etcdBin,
        [
          '--name', 't',
          '--data-dir', etcdDir,
          '--listen-client-urls', etcdUrl,
          '--advertise-client-urls', etcdUrl,
          '--listen-peer-urls', `http://127.0.0.1:${peer}`,
          '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
          '--initial-cluster', `t=http://127.0.0.1:${peer}`,
          '--initial-cluster-state', 'new',
          '--heartbeat-interval=10',
          '--election-timeout=100',
          '--logger', 'zap',
          '--log-level', 'error',
        ],
        etcdLog,
      );
      try {
        const url = etcdUrl;
        await waitFor('etcd', 20_000, etcd, etcdLog, async () => {
          const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
          const j = (await r.json()) as { health?: string };
          return j.health === 'true';
        });
        break;
      } catch (e) {
        await terminate(etcd, 0);
        if (attempt < 3 && (await portClash(etcdLog))) continue;
        throw e;
      }
    }

    // ---- kube-apiserver
    const [caPem, adminCertPem, adminKeyPem] = await Promise.all([
      fsp.readFile(pki.caCrt, 'utf8'),
      fsp.readFile(pki.adminCrt, 'utf8'),
      fsp.readFile(pki.adminKey, 'utf8'),
    ]);
    const agent = new https.Agent({ ca: caPem, cert: adminCertPem, key: adminKeyPem, keepAlive: false });

    const request = (method: string, urlPath: string, body?: unknown, contentType = 'application/json') =>
      new Promise<KubeResponse>((resolve, reject) => {
        const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
        const req = https.request(
          `https://127.0.0.1:${securePort}${urlPath}`,
          {
            method,
            agent,
            headers: {
              Accept: 'application/json',
              ...(payload !== undefined ? { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(payload) } : {}),
            },
            timeout: 10_000,
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (text += d));
            res.on('end', () => {
              let parsed: unknown = text;
              if ((res.headers['content-type'] ?? '').includes('json')) {
                try {
                  parsed = JSON.parse(text);
                } catch {
                  /* keep text */
                }
              }
              resolve({ status: res.statusCode ?? 0, body: parsed });
            });
          },
        );
        req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout`)));
        req.on('error', reject);
        if (payload !== undefined) req.write(payload);
        req.end();
      });

    let securePort = 0;
    const apiserverArgs = () => [
      `--etcd-servers=${etcdUrl}`,
      `--secure-port=${securePort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      // 1.37 refuses a loopback advertise address with the default (lease) reconciler:
      // "cannot use public IP 127.0.0.1 with endpoint reconciler ... may not be in the
      // loopback range". The kubernetes Service endpoints are irrelevant here.
      '--endpoint-reconciler-type=none',
      `--tls-cert-file=${pki.serverCrt}`,
      `--tls-private-key-file=${pki.serverKey}`,
      `--client-ca-file=${pki.caCrt}`,
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      '--api-audiences=https://kubernetes.default.svc',
      '--authorization-mode=RBAC',
      '--service-cluster-ip-range=10.0.0.0/24',
      // No controller-manager → nothing would create SA tokens/default SAs for pods.
      '--disable-admission-plugins=ServiceAccount',
      '--allow-privileged=true',
      '--profiling=false',
      '--v=0',
      ...(opts.extraArgs ?? []),
    ];
    const readyTimeout = opts.readyTimeoutMs ?? 60_000;

    const startApiserver = async () => {
      await fsp.appendFile(logFile, `\n===== start ${new Date().toISOString()} ${apiserverBin}\n`);
      apiserver = launch(apiserverBin, apiserverArgs(), logFile);
      const proc = apiserver;
      await waitFor('kube-apiserver', readyTimeout, proc, logFile, async () => {
        const r = await request('GET', '/readyz');
        return r.status === 200;
      });
    };

    const tStart = Date.now();
    for (let attempt = 1; ; attempt++) {
      [securePort] = await distinctFreePorts(1);
      try {
        await startApiserver();
        break;
      } catch (e) {
        await terminate(apiserver, 0);
        if (attempt < 3 && (await portClash(logFile))) continue;
        throw e;
      }
    }
    const url = `https://127.0.0.1:${securePort}`;
    const ver = await request('GET', '/version');
    const version = String((ver.body as { gitVersion?: string })?.gitVersion ?? 'unknown');
    if (process.env.CONFSYNC_KUBE_VERBOSE) {
      process.stderr.write(
        `kube harness: ${version} ready at ${url} in ${Date.now() - tStart} ms (total ${Date.now() - t0} ms incl. binary + etcd + pki)\n`,
      );
    }

    const adminKubeconfig = path.join(dir, 'admin.kubeconfig');
    await fsp.writeFile(
      adminKubeconfig,
      kubeconfigYaml(url, caPem, 'confsync-test-admin', {
        'client-certificate-data': b64(adminCertPem),
        'client-key-data': b64(adminKeyPem),
      }),
      { mode: 0o600 },
    );

    let saCounter = 0;
    const expectOk = (what: string, r: KubeResponse, ok: number[]) => {
      if (!ok.includes(r.status)) throw new Error(`${what}: HTTP ${r.status}: ${JSON.stringify(r.body)}`);
    };

    const handle: KubeHandle = {
      url,
      caFile: pki.caCrt,
      adminKubeconfig,
      adminCertFile: pki.adminCrt,
      adminKeyFile: pki.adminKey,
      etcdUrl,
      dir,
      logFile,
      version,
      request,
      async kubeconfigFor(sa: ServiceAccountRef): Promise<string> {
        const ns = encodeURIComponent(sa.namespace);
        const name = encodeURIComponent(sa.name);
        expectOk(
          `create namespace ${sa.namespace}`,
          await request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: sa.namespace } }),
          [201, 409],
        );
        expectOk(
          `create serviceaccount ${sa.namespace}/${sa.name}`,
          await request('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, {
            apiVersion: 'v1',
            kind: 'ServiceAccount',
            metadata: { name: sa.name, namespace: sa.namespace },
          }),
          [201, 409],
        );
        const tr = await request('POST', `/api/v1/namespaces/${ns}/serviceaccounts/${name}/token`, {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: { expirationSeconds: 3600 },
        });
        expectOk(`TokenRequest ${sa.namespace}/${sa.name}`, tr, [200, 201]);
        const token = (tr.body as { status?: { token?: string } })?.status?.token;
        if (!token) throw new Error(`TokenRequest ${sa.namespace}/${sa.name}: no token in ${JSON.stringify(tr.body)}`);
        const user = `system:serviceaccount:${sa.namespace}:${sa.name}`;
        const file = path.join(dir, `sa-${sa.namespace}-${sa.name}-${++saCounter}.kubeconfig`);
        await fsp.writeFile(file, kubeconfigYaml(url, caPem, user, { token }), { mode: 0o600 });
        return file;
      },
      async restart(): Promise<void> {
        if (stopped) throw new Error('kube harness: restart() after stop()');
        await terminate(apiserver, 10_000);
        await startApiserver();
      },
      async stop(): Promise<void> {
        if (stopped) return;
        stopped = true;
        agent.destroy();
        await cleanup();
      },
    };
    return handle;
  } catch (e) {
    const keep = process.env.CONFSYNC_KEEP_KUBE_DIR;
    await cleanup().catch(() => undefined);
    if (e instanceof Error && keep) e.message += ` (logs kept in ${dir})`;
    throw e;
  }
}

async function waitFor(
  what: string,
  timeoutMs: number,
  proc: Proc,
  logFile: string,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr = '';
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    if (proc.exitCode !== undefined) {
      throw new Error(`${what} exited (code ${proc.exitCode}) before becoming ready; log tail:\n${await tail(logFile)}`);
    }
    try {
      if (await probe()) return;
      lastErr = 'not ready';
    } catch (e) {
      lastErr = e instanceof Error ? e.message : String(e);
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not ready after ${timeoutMs} ms (last: ${lastErr}); log tail:\n${await tail(logFile)}`);
    }
    await sleep(delay);
  }
}
