import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { startKubeApiserver, type KubeHandle } from './harness/kube.js';
import { startProxy } from './harness/proxy.js';
import { DaemonProcess, until } from './harness/daemon.js';
import { freePort } from './harness/ports.js';

/**
 * The Kubernetes sink on a real kube-apiserver (RBAC on), the daemon
 * authenticated as the ServiceAccount that deploy/kubernetes binds — so these
 * tests also prove the shipped RBAC is enough.
 */
const P = '/confsync';
const DEPLOY = fileURLToPath(new URL('../../deploy/kubernetes', import.meta.url));

// CONFSYNC_SKIP_KUBE=1 skips these (for machines without Go to build kube-apiserver); CI never sets it.
const skip = process.env.CONFSYNC_SKIP_KUBE === '1' ? 'CONFSYNC_SKIP_KUBE=1: kube-apiserver tests skipped' : false;

let kube: KubeHandle;
let etcd: EtcdHandle;
let etcdc: Etcd3;
let saKubeconfig: string;

function kubectl(...args: string[]) {
  return spawnSync('kubectl', ['--kubeconfig', kube.adminKubeconfig, ...args], { encoding: 'utf8' });
}

async function getObj(kind: 'configmaps' | 'secrets', ns: string, name: string): Promise<any | undefined> {
  const r = await kube.request('GET', `/api/v1/namespaces/${ns}/${kind}/${name}`);
  return r.status === 200 ? r.body : undefined;
}

function daemon(extra: Record<string, unknown> = {}, kubeconfig = saKubeconfig, leader: Record<string, unknown> = {}) {
  return new DaemonProcess({
    cluster: 'eu',
    etcd: { endpoints: [etcd.endpoint] },
    sinks: { kubernetes: { enabled: true, kubeconfig, leaderElection: { leaseDurationSeconds: 3, renewSeconds: 0.5, ...leader } } },
    ...extra,
  }).start();
}

before(async () => {
  if (skip) return;
  kube = await startKubeApiserver();
  etcd = await startEtcd();
  etcdc = new Etcd3({ hosts: etcd.endpoint });
  for (const f of ['namespace.yaml', 'serviceaccount.yaml', 'rbac.yaml']) {
    const r = kubectl('apply', '--server-side', '-f', path.join(DEPLOY, f));
    assert.equal(r.status, 0, r.stderr);
  }
  saKubeconfig = await kube.kubeconfigFor({ namespace: 'confsync', name: 'confsync' });
});

after(async () => {
  etcdc?.close();
  await etcd?.stop();
  await kube?.stop();
});

test('the manifests pass a server-side dry-run apply (kustomize)', { skip }, () => {
  const r = kubectl('apply', '--server-side', '--dry-run=server', '-k', DEPLOY);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /daemonset.apps\/confsync serverside-applied \(server dry run\)/);
});

test('ConfigMap and Secret round trip (binaryData, overrides, @meta), ownership, prune, hand edit and delete reverted', { skip }, async () => {
  const dir = fs.mkdtempSync('/tmp/confsync-k8s-');
  const id = generateIdentity();
  await writeIdentityFile(path.join(dir, 'id.key'), id);
  const d = daemon({ identity: path.join(dir, 'id.key') });
  try {
    await d.ready();
    await etcdc.put(`${P}/global/configmaps/default/app/a`).value('global-a');
    await etcdc.put(`${P}/global/configmaps/default/app/b`).value('global-b');
    await etcdc.put(`${P}/clusters/eu/configmaps/default/app/b`).value('eu-b');
    await etcdc.put(`${P}/global/configmaps/default/app/bin`).value(Buffer.from([0xff, 0x00, 0xfe]));
    await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value(JSON.stringify({ labels: { team: 'web' }, annotations: { note: 'hi' } }));
    const secretPath = 'global/secrets/default/db/password';
    await etcdc.put(`${P}/${secretPath}`).value(await seal(Buffer.from('hunter2'), secretPath, [recipientOf(id.publicKey)]));
    await etcdc.put(`${P}/global/secrets/default/db/@meta`).value(JSON.stringify({ type: 'kubernetes.io/basic-auth' }));

    const cm = await until(async () => {
      const o = await getObj('configmaps', 'default', 'app');
      // Each put is applied as it arrives: wait for the last of them (@meta), not just the data.
      return o?.data?.b === 'eu-b' && o.binaryData && o.metadata?.labels?.team ? o : undefined;
    }, 'ConfigMap');
    assert.deepEqual(cm.data, { a: 'global-a', b: 'eu-b' });
    assert.deepEqual(cm.binaryData, { bin: Buffer.from([0xff, 0x00, 0xfe]).toString('base64') });
    assert.equal(cm.metadata.labels['app.kubernetes.io/managed-by'], 'confsync');
    assert.equal(cm.metadata.labels.team, 'web');
    assert.equal(cm.metadata.annotations.note, 'hi');
    assert.match(cm.metadata.annotations['confsync.io/content-hash'], /^[0-9a-f]{64}$/);
    assert.ok(Number(cm.metadata.annotations['confsync.io/source-revision']) > 0);
    assert.ok(cm.metadata.managedFields.some((f: any) => f.manager === 'confsync' && f.operation === 'Apply'));

    // Created Opaque first when the password lands before its @meta: the type change re-creates it.
    const secret = await until(async () => {
      const o = await getObj('secrets', 'default', 'db');
      return o?.type === 'kubernetes.io/basic-auth' ? o : undefined;
    }, 'Secret with its @meta type');
    assert.equal(Buffer.from(secret.data.password, 'base64').toString(), 'hunter2');
    assert.equal(secret.type, 'kubernetes.io/basic-auth');

    // An object someone else owns is reported and left exactly as it was.
    await kube.request('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'theirs' }, data: { mine: 'no' } });
    await etcdc.put(`${P}/global/configmaps/default/theirs/k`).value('ours?');
    await until(() => d.log.includes('exists and is not managed by confsync'), 'conflict reported');
    assert.deepEqual((await getObj('configmaps', 'default', 'theirs')).data, { mine: 'no' });

    // Hand edit → reverted; hand delete → restored.
    const t0 = Date.now();
    await kube.request('PATCH', '/api/v1/namespaces/default/configmaps/app', { data: { a: 'hand-edited', extra: 'x' } }, 'application/merge-patch+json');
    await until(async () => {
      const o = await getObj('configmaps', 'default', 'app');
      return o?.data?.a === 'global-a' && !('extra' in o.data);
    }, 'hand edit reverted', 10_000);
    const revertMs = Date.now() - t0;
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/app');
    await until(async () => (await getObj('configmaps', 'default', 'app'))?.data?.a === 'global-a', 'hand delete restored', 10_000);
    assert.ok(revertMs < 5000, `reverted in ${revertMs} ms`);

    // Deleted in etcd → deleted in the cluster; the unowned one stays.
    await etcdc.delete().prefix(`${P}/global/configmaps/default/app/`);
    await etcdc.delete().prefix(`${P}/clusters/eu/configmaps/default/app/`);
    await until(async () => !(await getObj('configmaps', 'default', 'app')), 'pruned');
    await etcdc.delete().prefix(`${P}/global/configmaps/default/theirs/`);
    await sleep(500);
    assert.ok(await getObj('configmaps', 'default', 'theirs'), 'unowned object never deleted');
    assert.ok(!d.log.includes('hunter2'), 'no plaintext in the log');
    assert.equal(await d.signal('SIGTERM'), 0);
  } finally {
    await d.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
    await etcdc.delete().prefix(`${P}/`);
    await kube.request('DELETE', '/api/v1/namespaces/default/secrets/db');
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/theirs');
  }
});

test("the sink's own writes coming back on its watch are not drift; a hand edit or delete is", { skip }, async () => {
  const { KubernetesSink, kubeConfigFor } = await import('../src/sink/kubernetes.js');
  const { createLogger } = await import('../src/log.js');
  const sink = new KubernetesSink({ kubeConfig: kubeConfigFor({ kubeconfig: saKubeconfig } as never), fieldManager: 'confsync', createNamespaces: false, logger: createLogger('silent') });
  const id: string = 'configmaps/default/own-writes';
  const obj = (v: string) => ({ id, kind: 'configmaps', namespace: 'default', name: 'own-writes', data: new Map([['k', Buffer.from(v)]]), labels: {}, annotations: {}, revision: 1, hash: v }) as never;
  const drift: string[] = [];
  try {
    await sink.watchDrift((i) => drift.push(i));
    for (const v of ['v1', 'v2', 'v3', 'v4']) assert.equal(await sink.apply(obj(v)), 'written');
    // The informer's cache holds v4 (so its events for v2..v4 were all delivered), and none was drift.
    await until(async () => (await sink.suspects([obj('v4')])).length === 0, 'informer saw v4');
    await sleep(200);
    assert.equal(drift.length, 0, `our own updates were not reported (got ${drift.join(', ')})`);

    const edit = kubectl('patch', 'configmap', 'own-writes', '-n', 'default', '--type=merge', '-p', '{"data":{"k":"hand"}}');
    assert.equal(edit.status, 0, edit.stderr);
    await until(() => drift.includes(id), 'hand edit reported');
    assert.equal(await sink.apply(obj('v4')), 'written', 'restored');
    drift.length = 0;
    const del = kubectl('delete', 'configmap', 'own-writes', '-n', 'default');
    assert.equal(del.status, 0, del.stderr);
    await until(() => drift.includes(id), 'delete reported');
  } finally {
    await sink.close();
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/own-writes');
  }
});

test('a missing namespace is reported, the others continue; an over-size object is reported', { skip }, async () => {
  const d = daemon();
  try {
    await d.ready();
    await etcdc.put(`${P}/global/configmaps/nowhere/app/k`).value('v');
    await etcdc.put(`${P}/global/configmaps/default/huge/k`).value('x'.repeat(1024 * 1024 + 10));
    await etcdc.put(`${P}/global/configmaps/default/fine/k`).value('v');
    await until(async () => (await getObj('configmaps', 'default', 'fine'))?.data?.k === 'v', 'the good object');
    await until(() => d.log.includes('namespace \\"nowhere\\" does not exist'), 'missing namespace reported');
    // Refused by the sink itself (the API server's own cap), as bad input: reported once, not retried.
    await until(() => d.log.includes('Kubernetes caps a ConfigMap at 1 MiB'), 'size reported');
    assert.ok(d.running);
  } finally {
    await d.cleanup();
    await etcdc.delete().prefix(`${P}/`);
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/fine');
  }
});

test('kube-apiserver unreachable for 30 s → /readyz says which sink is behind, converges afterwards with nothing lost, ready again', { skip }, async () => {
  const url = new URL(kube.url);
  const proxy = await startProxy(`http://${url.host}`);
  const viaProxy = saKubeconfig.replace(/\.yaml$|$/, '-proxy.yaml');
  fs.writeFileSync(viaProxy, fs.readFileSync(saKubeconfig, 'utf8').replace(kube.url, `https://127.0.0.1:${new URL(proxy.endpoint).port}`));
  const port = await freePort();
  const readyz = async () => {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: r.status, body: await r.text() };
  };
  const d = daemon({ metrics: { listen: `127.0.0.1:${port}`, stallSeconds: 5 } }, viaProxy);
  try {
    await d.ready();
    await until(async () => (await readyz()).status === 200, 'ready');
    await etcdc.put(`${P}/global/configmaps/default/outage/k`).value('before');
    await until(async () => (await getObj('configmaps', 'default', 'outage'))?.data?.k === 'before', 'before');
    proxy.cut();
    for (let i = 0; i < 20; i++) await etcdc.put(`${P}/global/configmaps/default/outage/k`).value(`during-${i}`);
    await etcdc.put(`${P}/global/configmaps/default/outage-new/k`).value('new');
    // The etcd watch is fine; the sink is not: not ready, naming it (while the files sink kept up).
    await until(async () => (await readyz()).status === 503, 'not ready while the Kubernetes API is unreachable', 20_000);
    assert.match((await readyz()).body, /sink kubernetes cannot apply \d+ object\(s\) for \d+ s \(retrying\)/);
    assert.equal(fs.readFileSync(d.file('configmaps', 'default', 'outage', 'k'), 'utf8'), 'during-19');
    await sleep(20_000);
    assert.equal((await getObj('configmaps', 'default', 'outage'))?.data?.k, 'before', 'nothing reached the cluster during the cut');
    proxy.restore();
    await until(async () => (await getObj('configmaps', 'default', 'outage'))?.data?.k === 'during-19', 'last value after the outage', 20_000);
    await until(async () => (await getObj('configmaps', 'default', 'outage-new'))?.data?.k === 'new', 'object created during the outage', 20_000);
    await until(async () => (await readyz()).status === 200, 'ready again once the sink caught up', 20_000);
  } finally {
    await d.cleanup();
    await proxy.close();
    await etcdc.delete().prefix(`${P}/`);
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/outage');
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/outage-new');
  }
});

test('two daemons for one cluster: exactly one writes; the other takes over when it dies', { skip }, async () => {
  const a = daemon({ node: 'node-a' });
  await a.ready();
  await until(() => a.log.includes('became the leader'), 'a leads');
  const b = daemon({ node: 'node-b' });
  try {
    await b.ready();
    await etcdc.put(`${P}/global/configmaps/default/ha/k`).value('1');
    await until(async () => (await getObj('configmaps', 'default', 'ha'))?.data?.k === '1', 'written');
    await sleep(1000);
    const written = (log: string) => log.split('\n').filter((l) => l.includes('"sink":"kubernetes"') && l.includes('"msg":"object written"')).length;
    assert.ok(written(a.log) >= 1, 'the leader wrote');
    assert.equal(written(b.log), 0, 'the follower wrote nothing');
    const lease = (await kube.request('GET', '/apis/coordination.k8s.io/v1/namespaces/confsync/leases/confsync-eu')).body;
    assert.equal(lease.spec.holderIdentity, 'node-a');

    await a.signal('SIGKILL');
    const t0 = Date.now();
    await until(() => b.log.includes('became the leader'), 'b takes over', 15_000);
    const takeoverMs = Date.now() - t0;
    await etcdc.put(`${P}/global/configmaps/default/ha/k`).value('2');
    await until(async () => (await getObj('configmaps', 'default', 'ha'))?.data?.k === '2', 'written by the new leader');
    assert.ok(takeoverMs < 10_000, `took over in ${takeoverMs} ms`);
    // Both daemons wrote their node's files all along.
    assert.ok(fs.existsSync(b.file('configmaps', 'default', 'ha', 'k')));
    assert.equal(await b.signal('SIGTERM'), 0);
  } finally {
    await a.cleanup();
    await b.cleanup();
    await etcdc.delete().prefix(`${P}/`);
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/ha');
  }
});

test('rolling restart: an opted-in Deployment using a changed ConfigMap gets a new pod-template annotation; others do not', { skip }, async () => {
  const deployment = (name: string, optIn: boolean, cm: string) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, annotations: optIn ? { 'confsync.io/restart-on-change': 'true' } : {} },
    spec: {
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'c', image: 'busybox', envFrom: [{ configMapRef: { name: cm } }] }] },
      },
    },
  });
  for (const [n, optIn, cm] of [['web', true, 'web-config'], ['web-no', false, 'web-config'], ['other', true, 'other-config']] as const) {
    const r = await kube.request('POST', '/apis/apps/v1/namespaces/default/deployments', deployment(n, optIn, cm));
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  const d = daemon();
  const annotation = async (name: string) =>
    (await kube.request('GET', `/apis/apps/v1/namespaces/default/deployments/${name}`)).body.spec.template.metadata.annotations?.['confsync.io/restartedAt'];
  try {
    await d.ready();
    await until(() => d.log.includes('became the leader'), 'leader');
    await etcdc.put(`${P}/global/configmaps/default/web-config/k`).value('1');
    const first = await until(() => annotation('web'), 'web rolled');
    await etcdc.put(`${P}/global/configmaps/default/web-config/k`).value('2');
    await until(async () => ((await annotation('web')) ?? '') > first, 'web rolled again on the next change');
    await sleep(800);
    assert.equal(await annotation('web-no'), undefined, 'not opted in: untouched');
    assert.equal(await annotation('other'), undefined, 'uses another ConfigMap: untouched');
    assert.match(d.log, /rolling restart: a ConfigMap or Secret it uses changed/);
  } finally {
    await d.cleanup();
    await etcdc.delete().prefix(`${P}/`);
    for (const n of ['web', 'web-no', 'other']) await kube.request('DELETE', `/apis/apps/v1/namespaces/default/deployments/${n}`);
    await kube.request('DELETE', '/api/v1/namespaces/default/configmaps/web-config');
  }
});
