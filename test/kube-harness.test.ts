// Smoke test for test/harness/kube.ts against a real kube-apiserver + etcd.
// The first run may build kube-apiserver from source (10–20 min); later runs use the cache.
// Set CONFSYNC_SKIP_KUBE=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { startKubeApiserver } from './harness/kube.js';

const execFileP = promisify(execFile);
const skip = process.env.CONFSYNC_SKIP_KUBE === '1' ? 'CONFSYNC_SKIP_KUBE=1: kube-apiserver tests skipped' : false;

function api(kubeconfigPath: string): k8s.CoreV1Api {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc.makeApiClient(k8s.CoreV1Api);
}

test('kube harness: admin CRUD, RBAC-denied ServiceAccount, apiserver restart', { skip }, async (t) => {
  const t0 = Date.now();
  const kube = await startKubeApiserver();
  t.diagnostic(`kube-apiserver ${kube.version} at ${kube.url} ready in ${Date.now() - t0} ms`);
  try {
    const ns = 'confsync-smoke';
    const admin = api(kube.adminKubeconfig);

    await admin.createNamespace({ body: { metadata: { name: ns } } });
    await admin.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'app-config' }, data: { 'app.yaml': 'greeting: hello\n' } },
    });

    // The admin kubeconfig also works for kubectl (when installed).
    if (fs.existsSync('/usr/bin/kubectl')) {
      const { stdout } = await execFileP('/usr/bin/kubectl', [
        '--kubeconfig', kube.adminKubeconfig, '-n', ns, 'get', 'configmap', 'app-config', '-o', 'jsonpath={.data.app\\.yaml}',
      ]);
      assert.equal(stdout, 'greeting: hello\n');
    }

    // A ServiceAccount with no RoleBindings: authenticated, but forbidden.
    const saKubeconfig = await kube.kubeconfigFor({ namespace: ns, name: 'reader' });
    const sa = api(saKubeconfig);
    await assert.rejects(
      sa.listNamespacedSecret({ namespace: ns }),
      (err: unknown) => {
        assert.ok(err instanceof k8s.ApiException, `expected ApiException, got ${String(err)}`);
        assert.equal(err.code, 403);
        const body = JSON.parse(String(err.body)) as { message?: string };
        assert.match(body.message ?? '', /system:serviceaccount:confsync-smoke:reader/);
        return true;
      },
    );

    const tRestart = Date.now();
    await kube.restart();
    t.diagnostic(`restart took ${Date.now() - tRestart} ms`);

    const cm = await admin.readNamespacedConfigMap({ name: 'app-config', namespace: ns });
    assert.equal(cm.data?.['app.yaml'], 'greeting: hello\n');
    // The SA token survives the restart too (same signing key).
    await assert.rejects(sa.listNamespacedSecret({ namespace: ns }), (err: unknown) => (err as k8s.ApiException<unknown>).code === 403);
  } finally {
    await kube.stop();
  }
  assert.equal(fs.existsSync(kube.dir), false, 'stop() removes the harness dir');
});
