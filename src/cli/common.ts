import { Option, type Command } from 'commander';
import { loadEtcdSection, type ConfigOverrides } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { UserError } from '../errors.js';
import { createEtcdClient } from '../source/etcd-client.js';

/** Flags every etcd-talking verb accepts (SPEC §5). */
export interface ConnectionFlags {
  endpoints?: string;
  prefix?: string;
  config?: string;
}

export function overridesFrom(flags: ConnectionFlags): ConfigOverrides {
  return {
    endpoints: flags.endpoints?.split(',').map((s) => s.trim()).filter(Boolean),
    prefix: flags.prefix,
  };
}

/**
 * etcd settings, by precedence: --endpoints/--prefix, then the --config file,
 * then $CONFSYNC_ENDPOINTS / $CONFSYNC_PREFIX, then the defaults.
 */
export function etcdFromFlags(flags: ConnectionFlags): Config['etcd'] {
  const o = overridesFrom(flags);
  // The CLI needs only the etcd section: a config without `cluster:` (an operator's
  // workstation file) is fine here.
  if (flags.config) return loadEtcdSection(flags.config, o);
  const endpoints = o.endpoints ?? process.env.CONFSYNC_ENDPOINTS?.split(',') ?? ['http://127.0.0.1:2379'];
  const prefix = o.prefix ?? process.env.CONFSYNC_PREFIX ?? '/confsync';
  if (!/^\/[^\0]*[^/]$/.test(prefix)) throw new UserError(`--prefix "${prefix}": must start with "/" and not end with "/"`);
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new UserError(`--endpoints: "${e}" is not an http(s)://host:port URL`);
  }
  return { endpoints, prefix };
}

export function connect(flags: ConnectionFlags) {
  const etcd = etcdFromFlags(flags);
  return { etcd, client: createEtcdClient(etcd) };
}

export function connectionOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--endpoints <urls>', 'etcd endpoints, comma-separated').env('CONFSYNC_ENDPOINTS'))
    .addOption(new Option('--prefix <prefix>', 'key prefix (default /confsync)').env('CONFSYNC_PREFIX'))
    .option('--config <file>', 'daemon config file (its etcd section is used)');
}
