/**
 * Logs people can read (issue 14, item 4), from the real daemon against real
 * etcd: coloured lines on a terminal (a pty from util-linux `script`), JSON
 * lines otherwise; the first sync and a reconnect say how long they took; an
 * outage warns once, not once per retry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { withDaemon } from './harness/fixture.js';
import { DaemonProcess, MAIN, until } from './harness/daemon.js';
import { startEtcd } from './harness/etcd.js';

const P = '/confsync';

function jsonLines(log: string): Record<string, any>[] {
  return log
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, any>;
      } catch {
        assert.fail(`not a JSON log line: ${l}`);
      }
    });
}

test('on a terminal the daemon logs coloured lines; piped, JSON lines', async () => {
  const etcd = await startEtcd();
  const d = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, log: { level: 'info' } });
  // `script` gives the daemon a pty as its stdout, as an operator's terminal would.
  const tty = spawn('script', ['-qfec', `${process.execPath} ${MAIN} run --config ${d.configFile}`, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  tty.stdout!.on('data', (b) => (out += b));
  try {
    await until(() => out.includes('confsync started') && /first full sync: 0 objects in [\d.]+ s/.test(out), 'pretty start lines');
    assert.ok(!out.includes('{"level"'), `no JSON on a terminal:\n${out}`);
    assert.match(out, /\u001b\[\d+m/, 'coloured');
    assert.match(out, /INFO.*confsync started/);
  } finally {
    try {
      process.kill(-tty.pid!, 'SIGKILL');
    } catch {}
    await d.cleanup();
  }
  // The same daemon with its output piped (journald, kubectl logs): JSON lines only.
  const piped = new DaemonProcess({ cluster: 'eu', etcd: { endpoints: [etcd.endpoint] }, log: { level: 'info' } }).start();
  try {
    await piped.ready();
    await until(() => piped.log.includes('first full sync'), 'first sync');
    const lines = jsonLines(piped.log);
    assert.ok(lines.some((l) => l.msg === 'confsync started' && l.level === 30));
  } finally {
    await piped.cleanup();
    await etcd.stop();
  }
});

test('first sync and reconnect say how long; an outage warns once with a count, not per retry; revisions never go back', async () => {
  await withDaemon(
    { cluster: 'eu', log: { level: 'info' } },
    async ({ etcd: e, d }) => {
      await until(() => jsonLines(d.log).find((l) => typeof l.msg === 'string' && l.msg.startsWith('first full sync:')), 'first sync line');
      const first = jsonLines(d.log).find((l) => l.msg.startsWith('first full sync:'))!;
      assert.match(first.msg, /^first full sync: 120 objects in \d+(\.\d)? s$/);
      assert.equal(first.objects, 120);
      assert.equal(typeof first.seconds, 'number');

      const from = d.log.length;
      await e.kill('SIGKILL');
      // Long enough for several retries (backoff tops out at 1 s).
      await until(() => d.log.slice(from).includes('etcd unavailable'), 'outage noticed');
      await sleep(5000);
      await e.start();
      const back = await until(() => jsonLines(d.log.slice(from)).find((l) => typeof l.msg === 'string' && l.msg.startsWith('etcd reconnected after')), 'reconnected line', 20_000);
      assert.match(back.msg, /^etcd reconnected after \d+(\.\d)? s$/);
      assert.ok(back.seconds >= 4, `the outage lasted over 5 s: ${back.seconds}`);
      const during = jsonLines(d.log.slice(from));
      const warns = during.filter((l) => l.level >= 40 && /^etcd (unavailable|still)/.test(l.msg));
      assert.equal(warns.length, 1, `one warning for a 5 s outage, not one per retry:\n${warns.map((w) => JSON.stringify(w)).join("\n")}`);
      assert.ok(!during.some((l) => l.level >= 30 && l.msg === 'etcd source state' && l.state === 'listing'), 'retry attempts are not logged at info');

      // Every revision an operator reads in the log moves forward.
      let last = 0;
      for (const l of jsonLines(d.log)) {
        for (const field of ['appliedUpTo', 'revision']) {
          if (typeof l[field] !== 'number' || l.msg === 'object written') continue;
          assert.ok(l[field] >= last, `"${l.msg}" ${field} ${l[field]} after ${last}`);
          last = l[field];
        }
      }
    },
    {
      // 120 objects in etcd before the daemon starts: a (small) cold start.
      endpoint: async (etcd) => {
        const c = new Etcd3({ hosts: etcd.endpoint });
        for (let i = 0; i < 120; i++) await c.put(`${P}/global/configmaps/default/o${i}/k`).value('v');
        c.close();
        return etcd.endpoint;
      },
    },
  );
});
