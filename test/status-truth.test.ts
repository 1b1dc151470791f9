/**
 * `confsync status` tells the truth (issue 14, item 5), through the real CLI
 * against a real daemon and etcd: an idle node shows LAG 0 although its own
 * status writes keep moving etcd's head; lastError clears once the object is
 * fixed; `--wait --json` prints JSON; `--revision` without `--wait` is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withDaemon } from './harness/fixture.js';
import { runCli } from './harness/cli.js';
import { until } from './harness/daemon.js';

const P = '/confsync';

test('status: LAG 0 on an idle node, lastError clears when fixed, --wait --json, --revision needs --wait', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-st-'));
  try {
    await withDaemon({ cluster: 'eu', node: 'a', status: { leaseTtlSeconds: 4, intervalSeconds: 0.2 } }, async ({ etcd, etcdc }) => {
      const cli = (...args: string[]) => runCli(args, { cwd, endpoint: etcd.endpoint });
      const json = () => {
        const r = cli('status', '--json');
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as { etcdRevision: number; nodes: any[] };
      };
      await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v');
      await until(() => json().nodes[0]?.objects === 1, 'object applied');

      // Idle: the node keeps rewriting its status key (head moves), yet it is not behind.
      const first = json();
      await until(() => json().etcdRevision > first.etcdRevision + 1, 'status writes move etcd head');
      for (let i = 0; i < 5; i++) {
        const s = json();
        assert.ok(s.etcdRevision > s.nodes[0].revision, 'head is past the applied revision (status writes)');
        assert.equal(s.nodes[0].lag, 0, `idle node shows no lag: ${JSON.stringify(s)}`);
      }
      assert.match(cli('status').stdout, /^eu\s+a\s+\d+\s+0\s/m, 'table LAG column is 0');

      // A bad @meta shows as lastError, by path; fixing it clears it.
      await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value('{not json');
      const bad = await until(() => json().nodes[0]?.lastError, 'lastError shown');
      assert.equal(bad.path, 'global/configmaps/default/app/@meta');
      assert.match(cli('status').stdout, /@meta: @meta is not valid JSON/);
      await etcdc.put(`${P}/global/configmaps/default/app/@meta`).value('{"labels":{"a":"b"}}');
      await until(() => json().nodes[0]?.lastError === undefined, 'lastError cleared after the fix');
      assert.doesNotMatch(cli('status').stdout, /not valid JSON/);
      // A bad key name (store-level) clears when the key is deleted.
      await etcdc.put(`${P}/global/configmaps/default/app/..evil`).value('x');
      await until(() => json().nodes[0]?.lastError?.path === 'global/configmaps/default/app/..evil', 'bad key shown');
      await etcdc.delete().key(`${P}/global/configmaps/default/app/..evil`);
      await until(() => json().nodes[0]?.lastError === undefined, 'bad key error cleared after delete');

      // --wait --json: JSON on success and on timeout.
      const put = await etcdc.put(`${P}/global/configmaps/default/app/k`).value('v2').exec();
      const rev = Number(put.header.revision);
      const ok = cli('status', '--wait', '--json', '--revision', String(rev), '--timeout', '10');
      assert.equal(ok.code, 0, ok.stderr);
      const okJson = JSON.parse(ok.stdout);
      assert.equal(okJson.done, true);
      assert.equal(okJson.revision, rev);
      assert.ok(okJson.nodes[0].revision >= rev);
      const late = cli('status', '--wait', '--json', '--revision', String(rev + 10_000), '--timeout', '0.3');
      assert.equal(late.code, 1);
      const lateJson = JSON.parse(late.stdout);
      assert.equal(lateJson.done, false);
      assert.deepEqual(lateJson.behind.map((b: any) => `${b.cluster}/${b.node}`), ['eu/a']);

      // --revision alone is a usage error: one line, exit 2, nothing read.
      const refused = cli('status', '--revision', String(rev));
      assert.equal(refused.code, 2);
      assert.equal(refused.stdout, '');
      assert.match(refused.stderr, /^confsync: --revision only applies with --wait.*\n$/);
    });
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
