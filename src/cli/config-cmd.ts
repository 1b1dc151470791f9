import fs from 'node:fs';
import type { Command } from 'commander';
import { parseListRef, parseRef, scopeFromFlags, type ScopeFlags } from '../admin/refs.js';
import { UserError } from '../errors.js';
import { printable } from '../keyspace.js';
import { ALLOW_EMPTY_HELP, connect, connectionOptions, promptLine, refuseEmpty, type ConnectionFlags } from './common.js';

type ConfigFlags = ScopeFlags & ConnectionFlags;

/** The argument, --file, a prompt on a terminal (like `secret set`, but echoed: config is not secret), or stdin to EOF. */
async function readValue(value: string | undefined, file: string | undefined): Promise<Buffer> {
  if (value !== undefined && file) throw new UserError('give a value or --file, not both');
  if (value !== undefined) return Buffer.from(value);
  if (!file && process.stdin.isTTY) return promptLine('value (Enter to finish): ');
  try {
    return fs.readFileSync(file ?? 0);
  } catch (err) {
    throw new UserError(`cannot read ${file ?? 'stdin'}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('plain config in etcd: set, get, rm, ls');
  const scoped = (cmd: Command) => connectionOptions(cmd).option('--cluster <name>', 'the clusters/<name>/ override scope instead of global');

  scoped(config.command('set <ref> [value]').description('set <namespace>/<name>/<key> (value from the argument, --file, stdin, or a prompt on a terminal)'))
    .option('--file <path>', 'read the value from a file')
    .option('--allow-empty', ALLOW_EMPTY_HELP)
    .action(async (ref: string, value: string | undefined, flags: ConfigFlags & { file?: string; allowEmpty?: boolean }) => {
      const { ks, client } = connect(flags);
      try {
        const t = parseRef('configmaps', ref, flags, 3);
        const key = ks.dataKey(t.scope, t.ref, t.key!);
        const data = await readValue(value, flags.file);
        refuseEmpty(data, value !== undefined ? 'the argument' : flags.file ? `--file ${flags.file}` : process.stdin.isTTY ? 'the prompt' : 'stdin', flags.allowEmpty);
        const res = await client.put(key).value(data).exec();
        process.stdout.write(`${key} @ revision ${res.header.revision}\n`);
      } finally {
        client.close();
      }
    });

  scoped(config.command('get <ref>').description('print the value of <namespace>/<name>/<key>')).action(async (ref: string, flags: ConfigFlags) => {
    const { ks, client } = connect(flags);
    try {
      const t = parseRef('configmaps', ref, flags, 3);
      const key = ks.dataKey(t.scope, t.ref, t.key!);
      const value = await client.get(key).buffer();
      if (value === null) throw new UserError(`${key}: not found`);
      // Raw bytes into a pipe or file (`config get … > f` must round-trip); on a
      // terminal, control and bidi characters are escaped like every other etcd text.
      process.stdout.write(process.stdout.isTTY ? printable(value.toString('utf8')) : value);
    } finally {
      client.close();
    }
  });

  scoped(config.command('rm <ref>').description('delete <namespace>/<name>/<key>, or a whole object with <namespace>/<name>')).action(async (ref: string, flags: ConfigFlags) => {
    const { ks, client } = connect(flags);
    try {
      const t = parseRef('configmaps', ref, flags, ref.split('/').length === 2 ? 2 : 3);
      const key = t.key === undefined ? ks.kindPrefix(t.scope, 'configmaps', t.ref.namespace, t.ref.name) : ks.dataKey(t.scope, t.ref, t.key);
      const res = t.key === undefined ? await client.delete().prefix(key).exec() : await client.delete().key(key).exec();
      if (Number(res.deleted) === 0) throw new UserError(`${key}: not found`);
      process.stdout.write(`deleted ${res.deleted} key(s) under ${key} @ revision ${res.header.revision}\n`);
    } finally {
      client.close();
    }
  });

  scoped(config.command('ls [ref]').description('list config keys (optionally under <namespace> or <namespace>/<name>)')).action(async (ref: string | undefined, flags: ConfigFlags) => {
    const { ks, client } = connect(flags);
    try {
      const { namespace, name } = parseListRef(ref);
      const base = ks.kindPrefix(scopeFromFlags(flags), 'configmaps', namespace, name);
      const res = await client.getAll().prefix(base).exec();
      for (const kv of res.kvs) {
        const rel = ks.relative(kv.key.toString());
        const bad = ks.parse(kv.key.toString()).type === 'invalid' ? '  (invalid: skipped by daemons)' : '';
        process.stdout.write(`${printable(rel)}\t${kv.value.length} bytes\trev ${kv.mod_revision}${bad}\n`);
      }
      if (res.kvs.length === 0) process.stderr.write(`no keys under ${printable(base)}\n`);
    } finally {
      client.close();
    }
  });
}
