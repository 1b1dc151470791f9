import type { Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import type { Problem } from '../desired/build.js';
import { validateKeys } from '../desired/validate.js';
import { open } from '../envelope/envelope.js';
import { createLogger } from '../log.js';
import { printable } from '../keyspace.js';
import { createEngine, parseTemplate } from '../render/template.js';
import { EtcdSource } from '../source/etcd.js';
import { connect, connectionOptions, identityOption, keyringFrom, outputOption, printStructured, type OutputFormat, type SecretFlags } from './common.js';

/**
 * Daemons read only `global/` and their own `clusters/<c>/` (least privilege),
 * so a bad key elsewhere under the prefix is invisible to them. `lint` reads the
 * whole prefix and runs the daemon's own checks on every key (desired/validate.ts:
 * key names, @meta, envelope structure, object limits — those of --config when
 * given); with --identity it also
 * opens every envelope. One line per problem, `<path>: <reason>` as the daemon logs
 * it; exit 1 if there is any.
 */
export function registerLint(program: Command): void {
  connectionOptions(
    program
      .command('lint')
      .description('run the daemon\'s checks on every key under the prefix (names, @meta, envelopes; opened with --identity); exit 1 on any problem')
      .addOption(identityOption())
      .addOption(outputOption()),
  ).action(async (flags: SecretFlags & { output: OutputFormat }) => {
    const keyring = flags.identity ? await keyringFrom(flags) : undefined;
    const { ks, client } = connect(flags);
    try {
      const source = new EtcdSource({ client, prefixes: [ks.key('')], logger: createLogger('error', process.stderr) });
      const snapshot = await source.list();
      // The daemon's limits: those of --config when given (the same file the daemons run with), else the defaults.
      const limits = flags.config ? loadConfigFile(flags.config).limits : configSchema.shape.limits.parse({});
      const engine = createEngine('error');
      const templateError = (source: string) => {
        const parsed = parseTemplate(engine, source);
        return 'error' in parsed ? `not a valid Liquid template: ${parsed.error}` : undefined;
      };
      const { problems, sealed } = validateKeys(snapshot.kvs, ks.key(''), { maxKeys: limits.maxObjectKeys, maxBytes: limits.maxObjectBytes }, templateError);
      let opened = 0;
      if (keyring) {
        for (const s of sealed) {
          try {
            (await open(s.value, s.path, keyring)).fill(0);
            opened++;
          } catch (err) {
            problems.push({ path: s.path, reason: (err as Error).message, unopened: true });
          }
        }
      }
      problems.sort((a: Problem, b: Problem) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      if (flags.output !== 'text') {
        const list = problems.map((p) => ({ path: p.path, reason: p.reason }));
        printStructured(flags.output, { revision: snapshot.revision, checked: snapshot.kvs.length, sealed: sealed.length, opened: keyring ? opened : null, problems: list });
      } else for (const p of problems) process.stdout.write(`${printable(p.path)}: ${printable(p.reason)}\n`);
      const secrets = keyring ? `${opened} of ${sealed.length} well-formed secret(s) opened` : 'secrets by structure only (--identity opens them)';
      process.stderr.write(`${snapshot.kvs.length} key(s) checked under ${ks.key('')} at revision ${snapshot.revision}, ${secrets}: ${problems.length} problem(s)\n`);
      if (problems.length > 0) process.exitCode = 1;
    } finally {
      client.close();
      keyring?.dispose();
    }
  });
}
