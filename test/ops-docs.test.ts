/**
 * docs/operations.md's jq recipes for the logs (issue 14, item 10), run as written on a
 * real daemon's output: the two `journalctl -u confsync -o cat … | jq …` lines under
 * Troubleshooting, with `journalctl …` swapped for the daemon's captured stdout plus the
 * kind of line systemd adds to `journalctl -u` (not JSON). The warning recipe must show a
 * bad object's warning with its path, the start-up recipe the first sync; neither may
 * stop on the non-JSON lines. (scripts/test-systemd.sh runs them on a real journal.)
 *
 * And the cluster section's overlay, built as written with `kubectl kustomize` next to a
 * copy of deploy/kubernetes: the image, the cluster name and the config it yields.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { withDaemon } from './harness/fixture.js';
import { until } from './harness/daemon.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const OPS = path.join(REPO, 'docs', 'operations.md');

/** The recipe lines under "## Troubleshooting", the jq part of each (after the first `| `). */
function recipes(): string[] {
  const doc = fs.readFileSync(OPS, 'utf8');
  const section = doc.slice(doc.indexOf('\n## Troubleshooting'));
  const lines = section.split('\n').filter((l) => /^journalctl -u confsync -o cat .*\| jq /.test(l));
  return lines.map((l) => l.slice(l.indexOf('| ') + 2));
}

function runRecipe(jq: string, input: string): string {
  const r = spawnSync('bash', ['-c', jq], { input, encoding: 'utf8' });
  assert.equal(r.error, undefined, `jq not runnable (scripts/setup.sh --test installs it): ${r.error?.message}`);
  assert.equal(r.status, 0, `the doc's recipe failed: ${jq}\n${r.stderr}`);
  return r.stdout;
}

test("docs/operations.md's jq recipes read a real daemon's log, systemd's non-JSON lines included", async () => {
  const found = recipes();
  assert.equal(found.length, 2, `two 'journalctl -u confsync -o cat … | jq' recipes under Troubleshooting, found:\n${found.join('\n')}`);
  const [warnings, startup] = found as [string, string];
  assert.match(warnings, /\.level >= 40/);

  await withDaemon({ cluster: 'eu', log: { level: 'info' } }, async ({ etcdc, d }) => {
    await etcdc.put('/confsync/global/configmaps/default/app/greeting').value('hello');
    await etcdc.put('/confsync/global/configmaps/default/broken/@meta').value('{not json');
    await until(() => d.log.split('\n').some((l) => l.includes('"level":40') && l.includes('broken')), 'a warning about default/broken');
    await until(() => d.log.includes('first full sync'), 'first sync line');

    const journal = [
      'Started confsync.service - confsync: config and secrets from etcd as atomically swapped files.',
      d.log.trimEnd(),
      'confsync.service: Main process exited, code=killed, status=9/KILL',
      '',
    ].join('\n');

    const warn = runRecipe(warnings, journal);
    const warnLines = warn.split('\n').filter((l) => l !== '');
    assert.ok(warnLines.length >= 1, `the warning recipe printed nothing for:\n${journal}`);
    assert.ok(warnLines.some((l) => l.includes('default/broken')), `a line names default/broken:\n${warn}`);
    for (const l of warnLines) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z \S/, `time first, then the message: ${l}`);
    assert.ok(!warn.includes('"level"'), 'readable lines, not JSON');

    const start = runRecipe(startup, journal);
    assert.match(start, /^first full sync: \d+ objects? in [\d.]+ s$/m);
  });
});

const skipKube = process.env.CONFSYNC_SKIP_KUBE === '1' ? 'CONFSYNC_SKIP_KUBE=1: no kubectl' : false;

test("docs/operations.md's cluster overlay builds with kubectl kustomize: image, cluster name, config replaced", { skip: skipKube }, () => {
  const doc = fs.readFileSync(OPS, 'utf8');
  const m = /<!-- overlay: test\/ops-docs\.test\.ts -->\n```yaml\n([\s\S]*?)\n```/.exec(doc);
  assert.ok(m, 'the overlay block is in docs/operations.md');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-overlay-'));
  try {
    fs.cpSync(path.join(REPO, 'deploy', 'kubernetes'), path.join(tmp, 'deploy', 'kubernetes'), { recursive: true });
    const overlay = path.join(tmp, 'overlays', 'prod-eu');
    fs.mkdirSync(overlay, { recursive: true });
    fs.writeFileSync(path.join(overlay, 'kustomization.yaml'), m[1]!);
    // The doc's step: copy the base config, then edit etcd.endpoints.
    const base = fs.readFileSync(path.join(REPO, 'deploy', 'kubernetes', 'config.yaml'), 'utf8');
    assert.ok(base.includes('https://etcd.example.internal:2379'));
    fs.writeFileSync(path.join(overlay, 'config.yaml'), base.replace('https://etcd.example.internal:2379', 'https://etcd-prod-eu.test:2379'));

    const r = spawnSync('kubectl', ['kustomize', overlay], { encoding: 'utf8' });
    assert.equal(r.error, undefined, `kubectl not runnable (scripts/setup.sh --test provides it): ${r.error?.message}`);
    assert.equal(r.status, 0, r.stderr);
    const objs = parseAllDocuments(r.stdout).map((d) => d.toJS() as any);
    const find = (kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);
    const ds = find('DaemonSet', 'confsync');
    assert.ok(ds, 'a DaemonSet confsync');
    const pods = [...ds.spec.template.spec.initContainers, ...ds.spec.template.spec.containers];
    for (const c of pods) assert.equal(c.image, 'registry.example.internal/confsync:0.1.0', `${c.name}'s image`);
    assert.equal(find('ConfigMap', 'confsync-cluster')?.data.cluster, 'prod-eu');
    const config = find('ConfigMap', 'confsync-config')?.data['config.yaml'] as string;
    assert.match(config, /etcd-prod-eu\.test:2379/);
    assert.doesNotMatch(config, /etcd\.example\.internal/);
    for (const o of objs) if (!['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) assert.equal(o.metadata.namespace, 'confsync', `${o.kind}/${o.metadata.name} in namespace confsync`);
    // The Secrets of step 3 are the names the DaemonSet mounts.
    const secrets = ds.spec.template.spec.volumes.filter((v: any) => v.secret).map((v: any) => v.secret.secretName).sort();
    assert.deepEqual(secrets, ['confsync-etcd-tls', 'confsync-identity']);
    for (const s of secrets) assert.ok(doc.includes(`create secret generic ${s}`), `docs/operations.md creates ${s}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
