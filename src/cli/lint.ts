import type { Command } from 'commander';
import { parseKey, printable } from '../source/keys.js';
import { connect, connectionOptions } from './common.js';

/**
 * Daemons read only `global/` and their own `clusters/<c>/` (least privilege),
 * so a malformed key elsewhere under the prefix is invisible to them. `lint`
 * reads the whole prefix and reports every key no daemon would use.
 */
export function registerLint(program: Command): void {
  connectionOptions(program.command('lint').description('report every key under the prefix that daemons would skip, and why (exit 1 if any)')).action(
    async (flags) => {
      const { etcd, client } = connect(flags);
      try {
        const res = await client.getAll().prefix(`${etcd.prefix}/`).keys();
        let bad = 0;
        for (const key of res) {
          const parsed = parseKey(key.slice(etcd.prefix.length + 1));
          if (parsed.type !== 'invalid') continue;
          bad++;
          process.stdout.write(`${printable(key)}\t${parsed.reason}\n`);
        }
        process.stderr.write(`${res.length} key(s) checked under ${etcd.prefix}/, ${bad} invalid\n`);
        if (bad > 0) process.exitCode = 1;
      } finally {
        client.close();
      }
    },
  );
}
