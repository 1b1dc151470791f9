import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { changedUpTo, formatFleet, readFleet } from '../admin/status.js';
import { UserError } from '../errors.js';
import { printable } from '../keyspace.js';
import { clusterFlag, connect, connectionOptions, outputOption, printStructured, type OutputFormat } from './common.js';

/** `confsync status`: the fleet view (src/admin/status.ts), or `--wait` for a revision. */
export function registerStatus(program: Command): void {
  connectionOptions(program.command('status').description('fleet view: each cluster/node, applied revision, lag, age, errors'))
    .addOption(outputOption())
    .option('--json', 'the same as -o json (kept for scripts)')
    .option('--wait', 'wait until every live node has applied --revision (exit 0), or time out (exit 1)')
    .option('--revision <n>', 'with --wait: the etcd revision to wait for (default: the current head)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '60')
    .option(clusterFlag, 'only this cluster')
    .action(async (flags) => {
      if (flags.revision !== undefined && !flags.wait) throw new UserError('--revision only applies with --wait (status --wait --revision N)');
      if (flags.json && flags.output !== 'text' && flags.output !== 'json') throw new UserError(`--json and -o ${flags.output}: choose one`);
      const output: OutputFormat = flags.json ? 'json' : flags.output;
      const { ks, client } = connect(flags);
      try {
        const read = async () => {
          const fleet = await readFleet(client, ks, flags.cluster);
          for (const line of fleet.skipped) process.stderr.write(`${line}\n`);
          return fleet;
        };

        if (flags.wait) {
          const timeoutMs = Number(flags.timeout) * 1000;
          if (!(timeoutMs > 0)) throw new UserError(`--timeout "${flags.timeout}": must be a positive number of seconds`);
          let target = flags.revision === undefined ? undefined : Number(flags.revision);
          if (target !== undefined && !Number.isInteger(target)) throw new UserError(`--revision "${flags.revision}": must be an integer`);
          const deadline = Date.now() + timeoutMs;
          // Per cluster: from which revision on its nodes have everything up to the target (changedUpTo), and from where that was asked.
          const reached = new Map<string, { from: number; at: number }>();
          for (;;) {
            const { head, rows } = await read();
            target ??= head;
            for (const c of new Set(rows.filter((r) => r.revision < target!).map((r) => r.cluster))) {
              const from = Math.min(...rows.filter((r) => r.cluster === c).map((r) => r.revision));
              const known = reached.get(c);
              if (!known || from < known.from) reached.set(c, { from, at: await changedUpTo(client, ks, c, from, target) });
            }
            const behind = rows.filter((r) => r.revision < target! && r.revision < (reached.get(r.cluster)?.at ?? target!));
            const done = rows.length > 0 && behind.length === 0;
            if (done || Date.now() > deadline) {
              if (output !== 'text') {
                const who = behind.map((r) => ({ cluster: r.cluster, node: r.node, revision: r.revision }));
                printStructured(output, { revision: target, done, etcdRevision: head, nodes: rows, behind: who });
              } else if (done) process.stdout.write(`all ${rows.length} node(s) have applied revision ${target}\n`);
            }
            if (done) return;
            if (Date.now() > deadline) {
              const who = rows.length === 0 ? 'no live nodes' : behind.map((r) => printable(`${r.cluster}/${r.node}@${r.revision}`)).join(', ');
              process.stderr.write(`confsync: timed out waiting for revision ${target}: ${who}\n`);
              process.exitCode = 1;
              return;
            }
            await sleep(100);
          }
        }

        const fleet = await read();
        if (output !== 'text') {
          printStructured(output, { etcdRevision: fleet.head, nodes: fleet.rows });
          return;
        }
        for (const line of formatFleet(fleet)) process.stdout.write(`${line}\n`);
      } finally {
        client.close();
      }
    });
}
