import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../errors.js';
import type { NodeStatus } from '../status.js';
import { connect, connectionOptions } from './common.js';

interface Row extends NodeStatus {
  lag: number;
  ageSeconds: number;
}

/**
 * `confsync status`: the fleet as the daemons report it under PREFIX/status/
 * (lease-bound: a dead daemon's entry is gone within its TTL). Lag is etcd's
 * head revision minus the node's applied revision.
 */
export function registerStatus(program: Command): void {
  connectionOptions(program.command('status').description('fleet view: each cluster/node, applied revision, lag, age, errors'))
    .option('--json', 'machine-readable output')
    .option('--wait', 'wait until every live node has applied --revision (exit 0), or time out (exit 1)')
    .option('--revision <n>', 'with --wait: the etcd revision to wait for (default: the current head)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '60')
    .option('--cluster <name>', 'only this cluster')
    .action(async (flags) => {
      const { etcd, client } = connect(flags);
      try {
        const read = async () => {
          const res = await client.getAll().prefix(`${etcd.prefix}/status/${flags.cluster ? `${flags.cluster}/` : ''}`).exec();
          const head = Number(res.header.revision);
          const rows: Row[] = [];
          for (const kv of res.kvs) {
            try {
              const s = JSON.parse(kv.value.toString()) as NodeStatus;
              rows.push({ ...s, lag: Math.max(0, head - s.revision), ageSeconds: Math.max(0, (Date.now() - Date.parse(s.updatedAt)) / 1000) });
            } catch {
              process.stderr.write(`${kv.key.toString()}: not a status JSON (skipped)\n`);
            }
          }
          return { head, rows: rows.sort((a, b) => a.cluster.localeCompare(b.cluster) || a.node.localeCompare(b.node)) };
        };

        if (flags.wait) {
          const timeoutMs = Number(flags.timeout) * 1000;
          if (!(timeoutMs > 0)) throw new UserError(`--timeout "${flags.timeout}": must be a positive number of seconds`);
          let target = flags.revision === undefined ? undefined : Number(flags.revision);
          if (target !== undefined && !Number.isInteger(target)) throw new UserError(`--revision "${flags.revision}": must be an integer`);
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const { head, rows } = await read();
            target ??= head;
            const behind = rows.filter((r) => r.revision < target!);
            if (rows.length > 0 && behind.length === 0) {
              process.stdout.write(`all ${rows.length} node(s) have applied revision ${target}\n`);
              return;
            }
            if (Date.now() > deadline) {
              const who = rows.length === 0 ? 'no live nodes' : behind.map((r) => `${r.cluster}/${r.node}@${r.revision}`).join(', ');
              process.stderr.write(`confsync: timed out waiting for revision ${target}: ${who}\n`);
              process.exitCode = 1;
              return;
            }
            await sleep(100);
          }
        }

        const { head, rows } = await read();
        if (flags.json) {
          process.stdout.write(`${JSON.stringify({ etcdRevision: head, nodes: rows }, null, 2)}\n`);
          return;
        }
        const table = [['CLUSTER', 'NODE', 'REVISION', 'LAG', 'AGE', 'READY', 'OBJECTS', 'ERRORS', 'LAST ERROR']];
        for (const r of rows) {
          table.push([
            r.cluster, r.node, String(r.revision), String(r.lag), `${Math.round(r.ageSeconds)}s`, r.ready ? 'yes' : 'no', String(r.objects), String(r.errors),
            r.lastError ? `${r.lastError.path}: ${r.lastError.reason}` : '',
          ]);
        }
        const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
        for (const row of table) process.stdout.write(`${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
        process.stdout.write(`etcd revision ${head}; ${rows.length} live node(s)\n`);
      } finally {
        client.close();
      }
    });
}
