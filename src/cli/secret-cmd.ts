/**
 * Secret verbs: keygen, seal, secret set|get|rm|ls, recipients pull|ls (rewrap: ./rewrap.ts).
 * Thin wiring over src/envelope (seal/open/keyring) and the pinned recipients
 * file; the daemon opens what these write with the same envelope module.
 *
 * Two rules hold for every verb here:
 *  - a secret value enters only through a file or stdin, never argv (shell
 *    history, `ps`), and leaves only through stdout of `secret get`;
 *  - error messages name paths, flags and fingerprints, never a value or a key.
 */
import { Option, type Command } from 'commander';
import type { IKeyValue } from 'etcd3';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import { loadConfigFile } from '../config/load.js';
import { EnvelopeError, envelopeRecipients, open, seal } from '../envelope/envelope.js';
import { generateIdentity, loadKeyring, parseRecipient, recipientOf, writeIdentityFile, type Identity, type Keyring, type Recipient } from '../envelope/identity.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { clusterError, parseKey, printable, scopePath, type Scope } from '../source/keys.js';
import { connect, connectionOptions, type ConnectionFlags } from './common.js';
import { configKey, scopeOf } from './config-cmd.js';

export interface SecretFlags extends ConnectionFlags {
  cluster?: string;
  recipientsFile?: string;
  identity?: string;
  file?: string;
}

const NO_ARGV_VALUES =
  'secret values are never taken from the command line (arguments land in shell history and in `ps` for every local user): use --file FILE, or pipe the value on stdin';

export function registerSecretCommands(program: Command): void {
  registerKeygen(program);
  registerSeal(program);
  registerSecret(program);
  registerRecipients(program);
}

// ---- shared option and input helpers ----

export const recipientsFileOption = () =>
  new Option('--recipients-file <file>', 'pinned recipients (YAML: clusters + admins)').env('CONFSYNC_RECIPIENTS').default(DEFAULT_RECIPIENTS_FILE);
export const identityOption = () =>
  new Option('--identity <file>', 'identity file (private keys, 0600); default: identity: of --config').env('CONFSYNC_IDENTITY');

/** --identity, else the identity: field of --config. */
export async function keyringFrom(flags: SecretFlags): Promise<Keyring> {
  const file = flags.identity || (flags.config ? loadConfigFile(flags.config).identity : undefined);
  if (!file) throw new UserError('--identity FILE is required (or --config with an identity: field)');
  return loadKeyring(file);
}

export function scopeFromFlags(flags: { cluster?: string }): Scope {
  scopeOf(flags); // validates the cluster name
  return flags.cluster ? { type: 'cluster', cluster: flags.cluster } : { type: 'global' };
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  return all;
}

/** The secret value: --file, a hidden prompt on a terminal, or stdin to EOF. */
async function readSecretValue(file: string | undefined): Promise<Buffer> {
  if (file) {
    return readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new UserError(`--file ${file}: cannot read (${err.code ?? err.message})`);
    });
  }
  if (process.stdin.isTTY) return promptHidden('secret value (input hidden, Enter to finish): ');
  return readStdin();
}

/** One line from the terminal without echo. Backspace edits; Ctrl-C aborts. */
async function promptHidden(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  const bytes: number[] = [];
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      stdin.on('data', (chunk: Buffer) => {
        for (const b of chunk) {
          if (b === 0x0d || b === 0x0a || b === 0x04 || b === 0x03) {
            chunk.fill(0);
            return b === 0x03 ? reject(new UserError('interrupted; nothing written')) : resolve(Buffer.from(bytes));
          }
          if (b === 0x7f || b === 0x08) {
            while (bytes.length > 0 && (bytes[bytes.length - 1]! & 0xc0) === 0x80) bytes.pop(); // UTF-8 continuation bytes
            bytes.pop();
          } else bytes.push(b);
        }
        chunk.fill(0);
      });
    });
  } finally {
    bytes.fill(0);
    stdin.setRawMode(false);
    stdin.pause();
    stdin.removeAllListeners('data');
    process.stderr.write('\n');
  }
}

function parseRecipientFlag(text: string, index: number): Recipient {
  try {
    return parseRecipient(text);
  } catch (err) {
    throw new UserError(`--recipient #${index + 1}: ${(err as Error).message}`);
  }
}

/** Keys of a keyring as identities again (for rewriting the file with one more key). */
function identitiesOf(keyring: Keyring): Identity[] {
  const seen = new Map<string, Identity>();
  for (const r of keyring.recipients()) {
    const id = keyring.keysFor(Buffer.from(r.id, 'hex')).find((i) => Buffer.compare(i.publicKey, r.publicKey) === 0);
    if (id) seen.set(Buffer.from(id.publicKey).toString('hex'), id);
  }
  return [...seen.values()];
}

function describeRecipients(list: readonly Recipient[], pinned: RecipientsFile | undefined): string {
  return list.map((r) => pinned?.describe(r.id) ?? r.id).join(', ');
}

// ---- keygen ----

function registerKeygen(program: Command): void {
  connectionOptions(
    program
      .command('keygen')
      .description('create an identity (private key file, mode 0600) and print its public recipient on stdout')
      .requiredOption('--out <file>', 'identity file to write')
      .option('--force', 'replace an existing identity file (its keys are lost); with --register, also replace a different registered key')
      .option('--add', 'add a new key to an existing identity file (rotation: the daemon opens with any key in the file)')
      .option('--register', 'publish the new recipient at PREFIX/recipients/<cluster> (needs --cluster)')
      .option('--cluster <name>', 'the cluster whose key this is (with --register)'),
  ).action(async (flags: ConnectionFlags & { out: string; force?: boolean; add?: boolean; register?: boolean; cluster?: string }) => {
    if (flags.add && flags.force) throw new UserError('--add keeps the existing keys and --force replaces them: choose one');
    if (flags.register && !flags.cluster) throw new UserError('--register needs --cluster NAME');
    if (flags.cluster && !flags.register) throw new UserError('--cluster is only used with --register');
    if (flags.cluster) {
      const err = clusterError(flags.cluster);
      if (err) throw new UserError(`--cluster: ${err}`);
    }
    const conn = flags.register ? connect(flags) : undefined;
    try {
      const regKey = conn && `${conn.etcd.prefix}/recipients/${flags.cluster}`;
      // Check the registration before writing anything, so a refusal leaves no new file behind.
      const existing = conn && regKey ? (await conn.client.get(regKey).exec()).kvs[0] : undefined;

      const identity = generateIdentity();
      const recipient = recipientOf(identity.publicKey);
      let previous: Recipient | undefined;
      if (existing) {
        try {
          previous = parseRecipient(existing.value.toString());
        } catch {
          previous = undefined; // garbage registration: replacing it is fine
        }
        if (previous && !flags.force && !flags.add) {
          throw new UserError(`${regKey} already holds key ${previous.id}; use --add to rotate (keep the old key in the file) or --force to replace the registration`);
        }
      }

      if (flags.add) {
        const keyring = await loadKeyring(flags.out).catch((err: Error) => {
          throw new UserError(`--add: ${err.message}`);
        });
        try {
          await writeIdentityFile(flags.out, [...identitiesOf(keyring), identity], { overwrite: true });
          process.stderr.write(`added key ${recipient.id} to ${flags.out} (now ${keyring.size + 1} keys, mode 0600)\n`);
        } finally {
          keyring.dispose();
        }
      } else {
        await writeIdentityFile(flags.out, identity, { overwrite: !!flags.force });
        process.stderr.write(`wrote identity ${recipient.id} to ${flags.out} (mode 0600)\n`);
      }
      identity.privateKey.fill(0);

      if (conn && regKey) {
        // Guard on what we saw: two concurrent keygens for one cluster must not both "win".
        const cmp = existing ? conn.client.if(regKey, 'Mod', '==', existing.mod_revision) : conn.client.if(regKey, 'Create', '==', 0);
        const res = await cmp.then(conn.client.put(regKey).value(recipient.text)).commit();
        if (!res.succeeded) throw new UserError(`${regKey} changed while registering; the identity file was written, re-run with --register only after checking it`);
        process.stderr.write(`registered at ${regKey}${previous ? ` (replaced ${previous.id})` : ''}\n`);
      }
      process.stdout.write(`${recipient.text}\n`);
    } finally {
      conn?.client.close();
    }
  });
}

// ---- seal ----

function registerSeal(program: Command): void {
  program
    .command('seal')
    .description('encrypt stdin for recipients, bound to --path; print the envelope on stdout (for `etcdctl put KEY "$(confsync seal …)"`)')
    .requiredOption('--path <path>', '<scope>/secrets/<ns>/<name>/<key> without the prefix, e.g. global/secrets/default/db/password: the envelope opens only there')
    .option('--recipient <recipient>', 'public recipient confsync1… (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
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
  const scoped = (cmd: Command) => connectionOptions(cmd).option('--cluster <name>', 'the clusters/<name>/ scope instead of global');

  scoped(
    secret
      .command('set <ref> [value]')
      .description('seal <namespace>/<name>/<key> to the pinned recipients of its scope and put it (value from --file or stdin, never the command line)'),
  )
    .option('--file <path>', 'read the value from this file (raw bytes, trailing newline kept)')
    .addOption(recipientsFileOption())
    .addHelpText('after', `\nThe value is read from --file, or stdin (a hidden prompt on a terminal). It is never accepted\nas an argument: ${NO_ARGV_VALUES.split(' (')[1]!.split(')')[0]}.\nglobal is sealed to every pinned cluster + admins; --cluster C to C + admins.`)
    // Unknown options and extra operands are caught here, not by commander, whose
    // message would echo them: `--value=hunter2` must not be printed back.
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (ref: string, _value: string | undefined, flags: SecretFlags, cmd: Command) => {
      if (cmd.args.length !== 1) throw new UserError(`unexpected argument or unknown option (not shown: it may be a secret). ${NO_ARGV_VALUES}`);
      const scope = scopeFromFlags(flags);
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
      const recipients = pinned.forScope(scope);
      const { etcd, client } = connect(flags);
      try {
        const key = configKey(etcd.prefix, 'secrets', ref, flags, 3);
        const plaintext = await readSecretValue(flags.file);
        let envelope: string;
        try {
          envelope = await seal(plaintext, key.slice(etcd.prefix.length + 1), recipients);
        } finally {
          plaintext.fill(0);
        }
        const res = await client.put(key).value(envelope).exec();
        process.stdout.write(`${key} sealed to ${describeRecipients(recipients, pinned)} @ revision ${res.header.revision}\n`);
      } finally {
        client.close();
      }
    });

  scoped(secret.command('get <ref>').description('open <namespace>/<name>/<key> with --identity and write the plaintext to stdout'))
    .addOption(identityOption())
    .action(async (ref: string, flags: SecretFlags) => {
      const keyring = await keyringFrom(flags);
      const { etcd, client } = connect(flags);
      try {
        const key = configKey(etcd.prefix, 'secrets', ref, flags, 3);
        const value = await client.get(key).buffer();
        if (value === null) throw new UserError(`${key}: not found`);
        const logical = key.slice(etcd.prefix.length + 1);
        let plain: Buffer;
        try {
          plain = await open(value, logical, keyring);
        } catch (err) {
          if (!(err instanceof EnvelopeError)) throw err;
          const to = err.reason === 'not-a-recipient' ? `; sealed to ${envelopeRecipients(value).join(', ')}, this identity holds ${keyring.recipients().map((r) => r.id).join(', ')}` : '';
          throw new UserError(`${logical}: ${err.message}${to}`);
        }
        await new Promise<void>((resolve, reject) => process.stdout.write(plain, (e) => (e ? reject(e) : resolve())));
        plain.fill(0);
      } finally {
        client.close();
        keyring.dispose();
      }
    });

  scoped(secret.command('rm <ref>').description('delete <namespace>/<name>/<key>, or a whole secret with <namespace>/<name>')).action(async (ref: string, flags: SecretFlags) => {
    const { etcd, client } = connect(flags);
    try {
      const whole = ref.split('/').length === 2;
      const key = configKey(etcd.prefix, 'secrets', ref, flags, whole ? 2 : 3);
      const res = whole ? await client.delete().prefix(`${key}/`).exec() : await client.delete().key(key).exec();
      if (Number(res.deleted) === 0) throw new UserError(`${key}: not found`);
      process.stdout.write(`deleted ${res.deleted} key(s) under ${key} @ revision ${res.header.revision}\n`);
    } finally {
      client.close();
    }
  });

  scoped(secret.command('ls [ref]').description('list secret keys and who can open each (never values); optionally under <namespace> or <namespace>/<name>'))
    .addOption(recipientsFileOption())
    .action(async (ref: string | undefined, flags: SecretFlags) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE, { missingOk: true }).catch(() => undefined);
      const { etcd, client } = connect(flags);
      try {
        const base = `${etcd.prefix}/${scopeOf(flags)}/secrets/${ref ? `${ref.replace(/\/+$/, '')}/` : ''}`;
        const res = await client.getAll().prefix(base).exec();
        for (const kv of res.kvs) {
          const rel = kv.key.toString().slice(etcd.prefix.length + 1);
          const parsed = parseKey(rel);
          let who: string;
          if (parsed.type === 'invalid') who = `invalid key (skipped by daemons): ${parsed.reason}`;
          else if (parsed.type === 'meta') who = '@meta';
          else {
            try {
              who = `sealed to ${envelopeRecipients(kv.value).map((id) => pinned?.describe(id) ?? id).join(', ')}`;
            } catch (err) {
              who = `NOT OPENABLE (${(err as EnvelopeError).reason ?? 'corrupt'}): daemons keep the last good value`;
            }
          }
          process.stdout.write(`${printable(rel)}\t${kv.value.length} bytes\trev ${kv.mod_revision}\t${who}\n`);
        }
        if (res.kvs.length === 0) process.stderr.write(`no keys under ${base}\n`);
      } finally {
        client.close();
      }
    });
}

// ---- recipients pull|ls ----

function registerRecipients(program: Command): void {
  const recipients = program.command('recipients').description('the pinned recipients file: pull cluster keys from etcd, list');

  connectionOptions(recipients.command('pull').description('pin the cluster keys registered under PREFIX/recipients/ after confirming their fingerprints'))
    .addOption(recipientsFileOption())
    .option('--yes', 'pin NEW clusters without asking (compare the fingerprints out of band first)')
    .option('--force', "accept a CHANGED key for an already pinned cluster (a rotation you know about; otherwise someone may have replaced it)")
    .action(async (flags: SecretFlags & { yes?: boolean; force?: boolean }) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE, { missingOk: true });
      const { etcd, client } = connect(flags);
      let kvs: IKeyValue[];
      try {
        kvs = (await client.getAll().prefix(`${etcd.prefix}/recipients/`).exec()).kvs;
      } finally {
        client.close();
      }
      const added: [string, Recipient][] = [];
      const changed: [string, Recipient, Recipient][] = [];
      for (const kv of kvs) {
        const rel = kv.key.toString().slice(etcd.prefix.length + 1);
        const parsed = parseKey(rel);
        if (parsed.type !== 'recipient') {
          process.stderr.write(`skipping ${printable(rel)}: ${parsed.type === 'invalid' ? parsed.reason : 'not a recipient key'}\n`);
          continue;
        }
        let registered: Recipient;
        try {
          registered = parseRecipient(kv.value.toString());
        } catch (err) {
          process.stderr.write(`skipping ${rel}: ${(err as Error).message}\n`);
          continue;
        }
        const current = pinned.clusters.get(parsed.cluster);
        if (!current) added.push([parsed.cluster, registered]);
        else if (current.id !== registered.id || current.text !== registered.text) changed.push([parsed.cluster, current, registered]);
        const state = !current ? 'NEW' : current.text === registered.text ? 'pinned' : `CHANGED (pinned ${current.id})`;
        process.stdout.write(`${parsed.cluster.padEnd(20)} ${registered.id}  ${state}\n`);
      }
      if (kvs.length === 0) process.stderr.write(`no keys under ${etcd.prefix}/recipients/ (clusters register with "confsync keygen --register --cluster NAME")\n`);

      if (changed.length > 0 && !flags.force) {
        const [name, was, now] = changed[0]!;
        const more = changed.length > 1 ? ` (and ${changed.length - 1} more changed)` : '';
        throw new UserError(`cluster "${name}": registered key ${now.id} differs from pinned key ${was.id}${more}; nothing pinned. If this is a rotation you expect, re-run with --force`);
      }
      if (added.length > 0 && !flags.yes) {
        if (!process.stdin.isTTY) {
          throw new UserError(`${added.length} new cluster key(s) not pinned: compare the fingerprints above out of band, then re-run with --yes (stdin is not a terminal, cannot ask)`);
        }
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`pin ${added.length} new cluster key(s) listed above? [y/N] `).finally(() => rl.close());
        if (!/^y(es)?$/i.test(answer.trim())) {
          process.stderr.write('not confirmed; nothing pinned\n');
          process.exitCode = 1;
          return;
        }
      }
      for (const [name, r] of added) pinned.pin(name, r);
      for (const [name, , r] of changed) pinned.pin(name, r);
      if (added.length + changed.length > 0) {
        await pinned.save();
        process.stderr.write(`pinned ${added.length} new and ${changed.length} changed cluster key(s) in ${pinned.path}\n`);
      }
    });

  recipients
    .command('ls')
    .description('show the pinned clusters and admins with their fingerprints')
    .addOption(recipientsFileOption())
    .action(async (flags: SecretFlags) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
      for (const [name, r] of pinned.clusters) process.stdout.write(`cluster  ${name.padEnd(20)} ${r.id}  ${r.text}\n`);
      for (const r of pinned.admins) process.stdout.write(`admin    ${'-'.padEnd(20)} ${r.id}  ${r.text}\n`);
      if (pinned.clusters.size + pinned.admins.length === 0) process.stderr.write(`${pinned.path} pins nothing\n`);
    });
}
