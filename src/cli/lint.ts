import type { Command } from 'commander';
import { printable } from '../keyspace.js';
import { connect, connectionOptions } from './common.js';

/**
 * Daemons read only `global/` and their own `clusters/<c>/` (least privilege),
 * so a malformed key elsewhere under the prefix is invisible to them. `lint`
 * reads the whole prefix and reports every key no daemon would use.
 */
export function registerLint(program: Command): void {
  connectionOptions(program.command('lint').description('report every key under the prefix that daemons would skip, and why (exit 1 if any)')).action(
    async (flags) => {
      const { ks, client } = connect(flags);
      try {
        const res = await client.getAll().prefix(ks.key('')).keys();
        let bad = 0;
        for (const key of res) {
          const parsed = ks.parse(key);
          if (parsed.type !== 'invalid') continue;
          bad++;
          process.stdout.write(`${printable(key)}\t${parsed.reason}\n`);
        }
        process.stderr.write(`${res.length} key(s) checked under ${ks.key('')}, ${bad} invalid\n`);
        if (bad > 0) process.exitCode = 1;
      } finally {
        client.close();
      }
    },
  );
}
