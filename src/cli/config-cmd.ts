import fs from 'node:fs';
import type { Command } from 'commander';
import { parseListRef, parseRef, scopeFromFlags, type ScopeFlags } from '../admin/refs.js';
import { listScoped, mergedValue } from '../admin/scopes.js';
import { UserError } from '../errors.js';
import { printable, scopePath } from '../keyspace.js';
import { ALLOW_EMPTY_HELP, clusterFlag, connect, connectionOptions, outputOption, printStructured, promptLine, refuseEmpty, type ConnectionFlags, type OutputFormat } from './common.js';

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
  const scoped = (cmd: Command) => connectionOptions(cmd).option(clusterFlag, 'the clusters/<name>/ override scope instead of global (ls: global and this scope)');

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

  scoped(config.command('get <ref>').description('print the value of <namespace>/<name>/<key>; with --merged --cluster C, the value cluster C gets and the scope it comes from'))
    .option('--merged', 'the value as the daemons of --cluster C layer it (global, then clusters/C on top; @meta placement applied); its scope on stderr')
    .option('--label <key=value>', 'with --merged: a label of cluster C, for @meta clusterSelector placement (repeatable)', (v: string, acc: string[] | undefined) => [...(acc ?? []), v])
    .addOption(outputOption())
    .action(async (ref: string, flags: ConfigFlags & { merged?: boolean; label?: string[]; output: OutputFormat }) => {
      if (flags.merged && !flags.cluster) throw new UserError('--merged needs --cluster C: the cluster whose view to compute');
      if (!flags.merged && flags.label) throw new UserError('--label is only used with --merged');
      const labels = parseLabels(flags.label ?? []);
      const { ks, client } = connect(flags);
      try {
        const t = parseRef('configmaps', ref, flags, 3);
        let found: { value: Buffer; scope: string; path: string; revision: number; overrides?: string };
        if (flags.merged) {
          const m = await mergedValue(client, ks, t.ref, t.key!, flags.cluster!, labels);
          if (m.type === 'none') throw new UserError(`${printable(ref)} on cluster ${flags.cluster}: ${printable(m.why)}`);
          found = m;
        } else {
          const key = ks.dataKey(t.scope, t.ref, t.key!);
          const res = await client.get(key).exec();
          const kv = res.kvs[0];
          if (!kv) throw new UserError(`${key}: not found`);
          found = { value: kv.value, scope: scopePath(t.scope), path: ks.relative(key), revision: Number(kv.mod_revision) };
        }
        if (flags.output !== 'text') {
          const text = found.value.toString('utf8');
          const value = Buffer.from(text, 'utf8').equals(found.value) ? { value: text } : { base64: found.value.toString('base64') };
          const merged = flags.merged ? { cluster: flags.cluster, overrides: found.overrides ?? null } : {};
          return printStructured(flags.output, { ref, scope: found.scope, path: found.path, revision: found.revision, bytes: found.value.length, ...merged, ...value });
        }
        // Raw bytes into a pipe or file (`config get … > f` must round-trip); on a
        // terminal, control and bidi characters are escaped like every other etcd text.
        process.stdout.write(process.stdout.isTTY ? printable(found.value.toString('utf8')) : found.value);
        const apart = process.stdout.isTTY && !found.value.toString('utf8').endsWith('\n') ? '\n' : ''; // the value and the note on separate terminal lines
        if (flags.merged) process.stderr.write(`${apart}from ${found.scope} (${printable(found.path)} @ revision ${found.revision}${found.overrides ? `; overrides ${printable(found.overrides)}` : ''})\n`);
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

  scoped(config.command('ls [ref]').description('list config keys with their scope (global, clusters/<c>), optionally under <namespace> or <namespace>/<name>; with --cluster C: global and clusters/C, overrides marked'))
    .addOption(outputOption())
    .action(async (ref: string | undefined, flags: ConfigFlags & { output: OutputFormat }) => {
      const where = parseListRef(ref);
      if (flags.cluster) scopeFromFlags(flags); // a bad --cluster is refused before connecting
      const { ks, client } = connect(flags);
      try {
        const entries = await listScoped(client, ks, 'configmaps', where, flags.cluster);
        if (flags.output !== 'text') return printStructured(flags.output, { cluster: flags.cluster ?? null, entries });
        const notes = { override: `overrides global on ${flags.cluster}`, overridden: `overridden by clusters/${flags.cluster}` };
        if (entries.length > 0) process.stdout.write('SCOPE\tKEY\tSIZE\tREV\tNOTE\n');
        for (const e of entries) {
          const note = e.invalid ? `invalid: skipped by daemons (${e.invalid})` : e.mark ? notes[e.mark] : '';
          process.stdout.write(`${printable(e.scope)}\t${printable(e.ref)}\t${e.bytes} bytes\trev ${e.revision}\t${printable(note)}\n`.replace(/\t\n$/, '\n'));
        }
        if (entries.length === 0) process.stderr.write(`no config keys${ref ? ` under ${printable(ref)}` : ''} in global or ${flags.cluster ? `clusters/${printable(flags.cluster)}` : 'any cluster scope'}\n`);
      } finally {
        client.close();
      }
    });
}

/** `--label k=v` (repeatable) as a label map. */
function parseLabels(list: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of list) {
    const i = item.indexOf('=');
    if (i <= 0) throw new UserError(`--label "${printable(item)}": expected key=value`);
    labels[item.slice(0, i)] = item.slice(i + 1);
  }
  return labels;
}
