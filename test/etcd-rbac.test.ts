import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';

/**
 * docs/etcd-rbac.md, end to end on a real etcd with authentication enabled:
 * scripts/etcd-rbac.sh makes the cluster's role and user, the real daemon runs
 * with those credentials and converges, and the same credentials are refused
 * everything the role does not name.
 */

const P = '/confsync';
const SCRIPT = fileURLToPath(new URL('../../scripts/etcd-rbac.sh', import.meta.url));

interface Ctl {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** etcdctl as a given user; the harness's `ctl` passes no credentials. */
function ctlAs(etcd: EtcdHandle, user: string, password: string, args: string[], input?: string): Ctl {
  const r = spawnSync('etcdctl', ['--endpoints', etcd.endpoint, '--command-timeout=3s', '--user', user, '--password', password, ...args], {
    encoding: 'utf8',
    input,
    env: { ...withoutCredentials(process.env), ETCDCTL_API: '3' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function withoutCredentials(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { ETCDCTL_USER: _u, ETCDCTL_PASSWORD: _p, ...rest } = env;
  return rest;
}

/**
 * Restart etcd with auth enabled. The harness polls `etcdctl endpoint health`
 * without credentials, which auth refuses; etcdctl reads ETCDCTL_USER/ETCDCTL_PASSWORD
 * from the environment it inherits, so they are set for the duration of the poll.
 */
async function restartWithAuth(etcd: EtcdHandle, rootPassword: string): Promise<void> {
  await etcd.kill('SIGKILL');
  Object.assign(process.env, { ETCDCTL_USER: 'root', ETCDCTL_PASSWORD: rootPassword });
  try {
    await etcd.start();
  } finally {
    delete process.env.ETCDCTL_USER;
    delete process.env.ETCDCTL_PASSWORD;
  }
}

function denied(r: Ctl, what: string): void {
  assert.notEqual(r.status, 0, `${what} should be refused, got: ${r.stdout}`);
  assert.match(r.stderr, /permission denied/, `${what}: refused for the right reason`);
}

function allowed(r: Ctl, what: string): string {
  assert.equal(r.status, 0, `${what} should be allowed: ${r.stderr}`);
  return r.stdout;
}

/** A fresh etcd with a root user and auth enabled; returns the root password. */
async function etcdWithAuth(): Promise<{ etcd: EtcdHandle; rootPassword: string }> {
  const etcd = await startEtcd();
  const rootPassword = randomBytes(12).toString('hex');
  // Before `auth enable` no credentials are needed; etcdctl reads the password from stdin.
  const add = spawnSync('etcdctl', ['--endpoints', etcd.endpoint, 'user', 'add', 'root', '--interactive=false'], { input: `${rootPassword}\n`, encoding: 'utf8' });
  assert.equal(add.status, 0, add.stderr);
  etcd.ctl('auth', 'enable');
  return { etcd, rootPassword };
}

test('etcd-rbac.sh prints the role and user commands and refuses bad names', () => {
  const r = spawnSync('bash', [SCRIPT, 'prod-eu', '/cs'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const cmds = r.stdout.split('\n').filter((l) => l.startsWith('etcdctl '));
  assert.deepEqual(cmds.map((l) => l.replace(/\s+#.*$/, '')), [
    'etcdctl role add confsync-prod-eu',
    'etcdctl role grant-permission confsync-prod-eu read --prefix=true /cs/global/',
    'etcdctl role grant-permission confsync-prod-eu read --prefix=true /cs/clusters/prod-eu/',
    'etcdctl role grant-permission confsync-prod-eu read --prefix=true /cs/recipients/',
    'etcdctl role grant-permission confsync-prod-eu readwrite --prefix=true /cs/status/prod-eu/',
    'etcdctl user add confsync-prod-eu --interactive=false < /etc/confsync/etcd-password',
    'etcdctl user grant-role confsync-prod-eu confsync-prod-eu',
  ]);
  for (const bad of [['Prod'], ['a/b'], ['eu', '/trailing/'], ['eu', 'no-slash'], ['eu', '/with space'], ['eu', '/glob*']]) {
    const b = spawnSync('bash', [SCRIPT, ...bad], { encoding: 'utf8' });
    assert.equal(b.status, 2, `refuses ${bad.join(' ')}`);
    assert.match(b.stderr, /^etcd-rbac: /);
  }
});

test('etcd RBAC: the cluster role lets the daemon converge (and survive an etcd restart) and refuses everything else', async (t) => {
  const { etcd, rootPassword } = await etcdWithAuth();
  const tmp = fs.mkdtempSync(path.join(path.dirname(etcd.dataDir), 'rbac-'));
  const passwordFile = path.join(tmp, 'etcd-password');
  const password = randomBytes(12).toString('hex');
  fs.writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  const root = (...args: string[]) => allowed(ctlAs(etcd, 'root', rootPassword, args), `root: ${args.join(' ')}`);
  const eu = (args: string[], input?: string) => ctlAs(etcd, 'confsync-eu', password, args, input);

  // The script, as an operator runs it: admin credentials in etcdctl's environment.
  const apply = () =>
    spawnSync('bash', [SCRIPT, 'eu', P, '--apply', '--password-file', passwordFile], {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3', ETCDCTL_ENDPOINTS: etcd.endpoint, ETCDCTL_USER: 'root', ETCDCTL_PASSWORD: rootPassword },
    });
  const first = apply();
  assert.equal(first.status, 0, first.stderr);
  assert.ok(!first.stderr.includes(password), 'the password is never echoed');
  const again = apply();
  assert.equal(again.status, 0, `--apply is idempotent: ${again.stderr}`);
  assert.match(again.stderr, /role confsync-eu exists/);
  const role = root('role', 'get', 'confsync-eu');
  for (const line of [`[${P}/global/, ${P}/global0)`, `[${P}/clusters/eu/, ${P}/clusters/eu0)`, `[${P}/recipients/, ${P}/recipients0)`]) {
    assert.ok(role.includes(line), `role grants ${line}: ${role}`);
  }

  root('put', `${P}/global/configmaps/default/app/a`, 'global-a');
  root('put', `${P}/global/configmaps/default/app/b`, 'global-b');
  root('put', `${P}/clusters/eu/configmaps/default/app/b`, 'eu-b');
  root('put', `${P}/clusters/us/configmaps/default/us-only/k`, 'us');
  root('put', `${P}/recipients/eu`, 'confsync1-not-checked-here');

  const d = new DaemonProcess({ cluster: 'eu', node: 'n1', etcd: { endpoints: [etcd.endpoint], prefix: P, auth: { username: 'confsync-eu', passwordFile } } }).start();
  try {
    await d.ready();
    await t.test('the daemon converges global and its own cluster scope with the role', async () => {
      await until(() => readOr(d.file('configmaps', 'default', 'app', 'b')) === 'eu-b', 'cluster override applied');
      assert.equal(readOr(d.file('configmaps', 'default', 'app', 'a')), 'global-a');
      assert.equal(fs.existsSync(d.file('configmaps', 'default', 'us-only')), false);
      root('put', `${P}/global/configmaps/default/app/a`, 'global-a2');
      await until(() => readOr(d.file('configmaps', 'default', 'app', 'a')) === 'global-a2', 'watched change applied');
      assert.ok(!/permission denied/i.test(d.log), `the daemon asked for nothing outside its role:\n${d.log.split('\n').filter((l) => /denied/i.test(l)).join('\n')}`);
    });

    await t.test('the daemon writes its lease-bound status key under the role', async () => {
      const key = `${P}/status/eu/n1`;
      const status = await until(() => eu(['get', key, '--print-value-only']).stdout.trim() || undefined, `status key ${key}`, 10_000);
      const parsed = JSON.parse(status);
      assert.equal(parsed.cluster, 'eu');
      assert.equal(parsed.node, 'n1');
      assert.equal(typeof parsed.revision, 'number');
      const kv = JSON.parse(root('get', key, '-w', 'json'));
      assert.notEqual(Number(kv.kvs[0].lease ?? 0), 0, 'the status key is bound to a lease');
    });

    await t.test("with the cluster's credentials etcdctl is refused what the role does not name", () => {
      // Reads outside the role.
      denied(eu(['get', '--prefix', `${P}/clusters/us/`]), "reading another cluster's scope");
      denied(eu(['get', `${P}/clusters/us/configmaps/default/us-only/k`]), "reading one key of another cluster's scope");
      denied(eu(['get', '--prefix', `${P}/`]), 'reading the whole prefix');
      denied(eu(['get', '--prefix', `${P}/status/us/`]), "reading another cluster's status");
      // Writes outside status/eu/.
      denied(eu(['put', `${P}/global/configmaps/default/app/a`, 'evil']), 'writing global/');
      denied(eu(['put', `${P}/clusters/eu/configmaps/default/app/b`, 'evil']), 'writing its own cluster scope');
      denied(eu(['put', `${P}/clusters/us/configmaps/default/app/b`, 'evil']), "writing another cluster's scope");
      denied(eu(['put', `${P}/status/us/n1`, '{}']), "writing another cluster's status");
      denied(eu(['put', `${P}/recipients/eu`, 'confsync1evil']), 'replacing its registered recipient');
      denied(eu(['del', '--prefix', `${P}/global/`]), 'deleting global/');
      denied(eu(['user', 'list']), 'user administration');
      // What it may do, for contrast.
      assert.equal(allowed(eu(['get', `${P}/global/configmaps/default/app/b`, '--print-value-only']), 'read global').trim(), 'global-b');
      assert.equal(allowed(eu(['get', `${P}/recipients/eu`, '--print-value-only']), 'read recipients').trim(), 'confsync1-not-checked-here');
      const lease = /lease ([0-9a-f]+) granted/.exec(allowed(eu(['lease', 'grant', '10']), 'lease grant'))![1]!;
      allowed(eu(['put', `${P}/status/eu/other-node`, '{}', '--lease', lease]), 'put its own status with a lease');
      allowed(eu(['lease', 'revoke', lease]), 'revoke that lease');
      assert.equal(root('get', `${P}/global/configmaps/default/app/a`, '--print-value-only').trim(), 'global-a2', 'nothing was overwritten');
    });

    await t.test('etcd restarts (its simple auth tokens are lost): the daemon authenticates again and converges', async () => {
      await restartWithAuth(etcd, rootPassword);
      root('put', `${P}/clusters/eu/configmaps/default/app/b`, 'eu-b2');
      await until(() => readOr(d.file('configmaps', 'default', 'app', 'b')) === 'eu-b2', 'change after the restart', 20_000);
    });

    await t.test('a wrong password is reported as a refusal (by error class / gRPC code), not as an outage', async () => {
      const wrongFile = path.join(tmp, 'wrong-password');
      fs.writeFileSync(wrongFile, 'not-the-password\n', { mode: 0o600 });
      const bad = new DaemonProcess({ cluster: 'eu', node: 'n2', etcd: { endpoints: [etcd.endpoint], prefix: P, auth: { username: 'confsync-eu', passwordFile: wrongFile } } }).start();
      try {
        await until(() => bad.log.includes('etcd refused our credentials or permissions'), 'refusal reported', 10_000);
        assert.ok(!bad.log.includes('not-the-password'));
      } finally {
        await bad.cleanup();
      }
    });

    await t.test('the password never appears in the daemon log', () => {
      assert.ok(d.log.length > 0);
      assert.ok(!d.log.includes(password));
    });

    assert.equal(await d.signal('SIGTERM'), 0);
  } finally {
    await d.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
    await etcd.stop();
  }
});
