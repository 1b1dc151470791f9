import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { clusterError, Keyspace } from '../keyspace.js';
import { clusterFlag, connect, connectionOptions, type ConnectionFlags } from './common.js';

/**
 * `confsync release --cluster C [--node N]`: confirm that the removals the
 * mass-delete guard holds on cluster C (or only on node N) may go. Writes
 * `PREFIX/clusters/C/@release` = `{"revision": <etcd head now>, "node"?: N}`;
 * a daemon lets go of a hold taken at or before that revision. Later mass
 * deletes need a new confirmation.
 */
export function registerRelease(program: Command): void {
  connectionOptions(program.command('release').description('let removals held by the mass-delete guard go through (see status "held")'))
    .requiredOption(clusterFlag, 'the cluster whose held removals may go')
    .option('--node <name>', 'only this node (default: every node of the cluster)')
    .action(async (flags: ConnectionFlags & { cluster: string; node?: string }) => {
      const err = clusterError(flags.cluster);
      if (err) throw new UserError(`--cluster: ${err}`);
      const { etcd, client } = connect(flags);
      try {
        const head = Number((await client.get(`${etcd.prefix}/`).exec()).header.revision);
        const key = new Keyspace(etcd.prefix).releaseKey(flags.cluster);
        await client.put(key).value(JSON.stringify({ revision: head, ...(flags.node ? { node: flags.node } : {}), at: new Date().toISOString() }));
        process.stdout.write(`released held removals on cluster ${flags.cluster}${flags.node ? ` node ${flags.node}` : ''} up to revision ${head} (${key})\n`);
      } finally {
        client.close();
      }
    });
}
