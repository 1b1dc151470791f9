/**
 * Secret verbs: seal, secret set|get|rm|ls (keygen: ./keygen.ts, recipients:
 * ./recipients-cmd.ts, rewrap: ./rewrap.ts). Flags and printing only; the work
 * is in src/admin/secrets.ts and src/envelope.
 *
 * Two rules hold for every verb here:
 *  - a secret value enters only through a file or stdin, never argv (shell
 *    history, `ps`), and leaves only through stdout of `secret get`;
 *  - error messages name paths, flags and fingerprints, never a value or a key.
 */
import { Option, type Command } from 'commander';
import { parseListRef, parseRef, scopeFromFlags } from '../admin/refs.js';
import { describeRecipients, getAndOpen, listSecrets, sealAndPut } from '../admin/secrets.js';
import { seal } from '../envelope/envelope.js';
import { parseRecipient, type Recipient } from '../envelope/identity.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { parseKey, printable, scopePath } from '../keyspace.js';
import { ALLOW_EMPTY_HELP, clusterFlag, connect, connectionOptions, identityOption, keyringFrom, outputOption, printStructured, readSecretValue, recipientsFileOption, refuseEmpty, type OutputFormat, type SecretFlags } from './common.js';

const NO_ARGV_VALUES =
  'secret values are never taken from the command line (arguments land in shell history and in `ps` for every local user): use --file FILE, or pipe the value on stdin';

export function registerSecretCommands(program: Command): void {
  registerSeal(program);
  registerSecret(program);
}

function parseRecipientFlag(text: string, index: number): Recipient {
  try {
    return parseRecipient(text);
  } catch (err) {
    throw new UserError(`--recipient #${index + 1}: ${(err as Error).message}`);
  }
}

// ---- seal ----

function registerSeal(program: Command): void {
  program
    .command('seal')
    .description('encrypt stdin for recipients, bound to --path; print the envelope on stdout (for `etcdctl put KEY "$(confsync seal …)"`)')
    .requiredOption('--path <path>', '<scope>/secrets/<ns>/<name>/<key> without the prefix, e.g. global/secrets/default/db/password: the envelope opens only there')
    .option('-r, --recipient <recipient>', 'public recipient confsync1… (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .addOption(new Option('--recipients-file <file>', `also seal to the pinned recipients of the scope (used by default, ${DEFAULT_RECIPIENTS_FILE} or $CONFSYNC_RECIPIENTS, when no --recipient is given)`))
    .option('--scope <scope>', 'global or clusters/<name>: whose pinned recipients to use (must match --path; default: its scope)')
    .action(async (flags: { path: string; recipient: string[]; recipientsFile?: string; scope?: string }) => {
      const parsed = parseKey(flags.path);
      if (flags.path.startsWith('/')) throw new UserError(`--path "${printable(flags.path)}": give the path without the prefix, e.g. global/secrets/default/db/password`);
      if (parsed.type === 'invalid') throw new UserError(`--path "${printable(flags.path)}": ${parsed.reason}`);
      if (parsed.type !== 'data' || parsed.kind !== 'secrets') {
        throw new UserError(`--path "${printable(flags.path)}": not a secret value path; expected <scope>/secrets/<namespace>/<name>/<key>`);
      }
      const recipients = flags.recipient.map(parseRecipientFlag);
      const pinnedPath = flags.recipientsFile ?? (flags.scope || recipients.length === 0 ? (process.env.CONFSYNC_RECIPIENTS || DEFAULT_RECIPIENTS_FILE) : undefined);
      if (pinnedPath) {
        const scope = scopePath(parsed.scope);
        if (flags.scope && flags.scope !== scope) throw new UserError(`--scope ${printable(flags.scope)} does not match the scope of --path (${scope})`);
        const pinned = await RecipientsFile.load(pinnedPath);
        recipients.push(...pinned.forScope(parsed.scope));
      }
      if (recipients.length === 0) throw new UserError('no recipients: give --recipient confsync1… (repeatable) or --recipients-file FILE');
      const plaintext = await readSecretValue(undefined);
      try {
        process.stdout.write(`${await seal(plaintext, parsed.logicalPath, recipients)}\n`);
      } finally {
        plaintext.fill(0);
      }
    });
}

// ---- secret set|get|rm|ls ----

function registerSecret(program: Command): void {
  const secret = program.command('secret').description('sealed secrets in etcd: set, get, rm, ls');
  const scoped = (cmd: Command) => connectionOptions(cmd).option(clusterFlag, 'the clusters/<name>/ scope instead of global');

  scoped(
    secret
      .command('set <ref> [value]')
      .description('seal <namespace>/<name>/<key> to the pinned recipients of its scope and put it (value from --file or stdin, never the command line)'),
  )
    .option('--file <path>', 'read the value from this file (raw bytes, trailing newline kept)')
    .option('--allow-empty', ALLOW_EMPTY_HELP)
    .addOption(recipientsFileOption())
    .addHelpText('after', `\nThe value is read from --file, or stdin (a hidden prompt on a terminal). It is never accepted\nas an argument: ${NO_ARGV_VALUES.split(' (')[1]!.split(')')[0]}.\nglobal is sealed to every pinned cluster + admins; --cluster C to C + admins.`)
    // Unknown options and extra operands are caught here, not by commander, whose
    // message would echo them: `--value=hunter2` must not be printed back.
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (ref: string, _value: string | undefined, flags: SecretFlags & { allowEmpty?: boolean }, cmd: Command) => {
      if (cmd.args.length !== 1) throw new UserError(`unexpected argument or unknown option (not shown: it may be a secret). ${NO_ARGV_VALUES}`);
      const scope = scopeFromFlags(flags);
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
      const recipients = pinned.forScope(scope);
      const { ks, client } = connect(flags);
      try {
        const t = parseRef('secrets', ref, flags, 3);
        const key = ks.dataKey(t.scope, t.ref, t.key!);
        const plaintext = await readSecretValue(flags.file);
        refuseEmpty(plaintext, flags.file ? `--file ${flags.file}` : 'stdin', flags.allowEmpty);
        const revision = await sealAndPut(client, ks, key, plaintext, recipients);
        process.stdout.write(`${key} sealed to ${describeRecipients(recipients, pinned)} @ revision ${revision}\n`);
      } finally {
        client.close();
      }
    });

  scoped(secret.command('get <ref>').description('open <namespace>/<name>/<key> with --identity and write the plaintext to stdout'))
    .addOption(identityOption())
    .action(async (ref: string, flags: SecretFlags) => {
      const keyring = await keyringFrom(flags);
      const { ks, client } = connect(flags);
      try {
        const t = parseRef('secrets', ref, flags, 3);
        const plain = await getAndOpen(client, ks, ks.dataKey(t.scope, t.ref, t.key!), keyring);
        await new Promise<void>((resolve, reject) => process.stdout.write(plain, (e) => (e ? reject(e) : resolve())));
        plain.fill(0);
      } finally {
        client.close();
        keyring.dispose();
      }
    });

  scoped(secret.command('rm <ref>').description('delete <namespace>/<name>/<key>, or a whole secret with <namespace>/<name>')).action(async (ref: string, flags: SecretFlags) => {
    const { ks, client } = connect(flags);
    try {
      const t = parseRef('secrets', ref, flags, ref.split('/').length === 2 ? 2 : 3);
      const key = t.key === undefined ? ks.kindPrefix(t.scope, 'secrets', t.ref.namespace, t.ref.name) : ks.dataKey(t.scope, t.ref, t.key);
      const res = t.key === undefined ? await client.delete().prefix(key).exec() : await client.delete().key(key).exec();
      if (Number(res.deleted) === 0) throw new UserError(`${key}: not found`);
      process.stdout.write(`deleted ${res.deleted} key(s) under ${key} @ revision ${res.header.revision}\n`);
    } finally {
      client.close();
    }
  });

  scoped(secret.command('ls [ref]').description('list secret keys and who can open each (never values); optionally under <namespace> or <namespace>/<name>'))
    .addOption(recipientsFileOption())
    .addOption(outputOption())
    .action(async (ref: string | undefined, flags: SecretFlags & { output: OutputFormat }) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE, { missingOk: true }).catch(() => undefined);
      const { ks, client } = connect(flags);
      try {
        const { namespace, name } = parseListRef(ref);
        const base = ks.kindPrefix(scopeFromFlags(flags), 'secrets', namespace, name);
        const rows = await listSecrets(client, ks, base, pinned);
        // Names, sizes and recipients only: listSecrets never opens an envelope.
        if (flags.output !== 'text') return printStructured(flags.output, { under: ks.relative(base), secrets: rows });
        for (const r of rows) process.stdout.write(`${printable(r.path)}\t${r.bytes} bytes\trev ${r.revision}\t${printable(r.who)}\n`);
        if (rows.length === 0) process.stderr.write(`no keys under ${printable(base)}\n`);
      } finally {
        client.close();
      }
    });
}
