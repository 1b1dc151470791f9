import type { Command } from 'commander';
import { createIdentity } from '../admin/keygen.js';
import { UserError } from '../errors.js';
import { clusterError } from '../keyspace.js';
import { clusterFlag, connect, connectionOptions, type ConnectionFlags } from './common.js';

interface KeygenFlags extends ConnectionFlags {
  out: string;
  force?: boolean;
  add?: boolean;
  mkdir?: boolean;
  register?: boolean;
  cluster?: string;
}

/** `confsync keygen`: flags → src/admin/keygen.ts; the recipient on stdout, notices on stderr. */
export function registerKeygen(program: Command): void {
  connectionOptions(
    program
      .command('keygen')
      .description('create an identity (private key file, mode 0600) and print its public recipient on stdout')
      .requiredOption('--out <file>', 'identity file to write')
      .option('--force', 'replace an existing identity file (its keys are lost); with --register, also replace a different registered key')
      .option('--mkdir', 'create the missing parent directories of --out (mode 0700); without it a missing directory is refused')
      .option('--add', 'add a new key to an existing identity file (rotation: the daemon opens with any key in the file)')
      .option('--register', 'publish the new recipient at PREFIX/recipients/<cluster> (needs --cluster)')
      .option(clusterFlag, 'the cluster whose key this is (with --register)'),
  ).action(async (flags: KeygenFlags) => {
    if (flags.add && flags.force) throw new UserError('--add keeps the existing keys and --force replaces them: choose one');
    if (flags.register && !flags.cluster) throw new UserError('--register needs --cluster NAME');
    if (flags.cluster && !flags.register) throw new UserError('--cluster is only used with --register');
    if (flags.cluster) {
      const err = clusterError(flags.cluster);
      if (err) throw new UserError(`--cluster: ${err}`);
    }
    const conn = flags.register ? connect(flags) : undefined;
    try {
      const recipient = await createIdentity({
        out: flags.out,
        force: flags.force,
        add: flags.add,
        mkdir: flags.mkdir,
        register: conn && flags.cluster ? { client: conn.client, ks: conn.ks, cluster: flags.cluster } : undefined,
        notice: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`${recipient.text}\n`);
    } finally {
      conn?.client.close();
    }
  });
}
