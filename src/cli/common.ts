/**
 * What several verb files share: the connection flags, the secret-tooling flags,
 * reading a value from a file, stdin or a hidden prompt, and the signal wait.
 * Verb files import only this file from cli/ (never each other); what they do
 * with the values lives in src/admin/.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { Document, visit } from 'yaml';
import { loadConfigFile, loadEtcdSection, type ConfigOverrides } from '../config/load.js';
import { configSchema, type Config } from '../config/schema.js';
import { describeOrigin, noteTarget, type EndpointsSource } from '../admin/etcd-target.js';
import type { Keyring } from '../envelope/identity.js';
import { loadKeyring } from '../envelope/identity.js';
import { DEFAULT_RECIPIENTS_FILE } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { createEtcdClient } from '../source/etcd-client.js';
import { Keyspace, printable } from '../keyspace.js';

/** Flags every etcd-talking verb accepts (SPEC §5). */
export interface ConnectionFlags {
  endpoints?: string;
  prefix?: string;
  config?: string;
  /** Where --endpoints and --prefix got their values (set by connectionOptions' preAction hook). */
  endpointsSource?: EndpointsSource;
  prefixSource?: EndpointsSource;
}

export function overridesFrom(flags: ConnectionFlags): ConfigOverrides {
  const endpoints = flags.endpoints?.split(',').map((s) => s.trim()).filter(Boolean);
  return {
    // An empty $CONFSYNC_ENDPOINTS (`export CONFSYNC_ENDPOINTS=`) means unset, not "no endpoints".
    endpoints: endpoints?.length ? endpoints : undefined,
    prefix: flags.prefix || undefined,
  };
}

/** `--endpoints`, `$CONFSYNC_ENDPOINTS`, `etcd.endpoints in FILE` or the default: named in errors. */
export function endpointsOrigin(flags: ConnectionFlags): string {
  if (overridesFrom(flags).endpoints) return describeOrigin(flags.endpointsSource === 'env' ? 'env' : 'cli');
  return describeOrigin(flags.config ? 'config' : 'default', flags.config);
}

/**
 * etcd settings: --endpoints/--prefix (commander fills them from $CONFSYNC_ENDPOINTS /
 * $CONFSYNC_PREFIX when not given) over the --config file's etcd section, over the
 * schema defaults. Validated once, by the config schema (src/config/schema.ts); a bad
 * value is reported under the name it was given by.
 */
export function etcdFromFlags(flags: ConnectionFlags): Config['etcd'] {
  const o = overridesFrom(flags);
  const parsed = configSchema.shape.etcd.safeParse({ endpoints: o.endpoints, prefix: o.prefix });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const isPrefix = issue.path[0] === 'prefix';
    const index = typeof issue.path[1] === 'number' ? issue.path[1] : 0;
    const value = isPrefix ? o.prefix : o.endpoints?.[index];
    const name = isPrefix ? (flags.prefixSource === 'env' ? '$CONFSYNC_PREFIX' : '--prefix') : endpointsOrigin(flags);
    throw new UserError(`${name}${value === undefined ? '' : ` "${printable(value)}"`}: ${issue.message}`);
  }
  // The CLI needs only the etcd section: a config without `cluster:` (an operator's
  // workstation file) is fine here.
  return flags.config ? loadEtcdSection(flags.config, o) : parsed.data;
}

/** An etcd client for these settings; a failure to reach it is reported with the endpoints' origin (admin/etcd-target.ts). */
export function dial(etcd: Config['etcd'], flags: ConnectionFlags) {
  noteTarget({ endpoints: etcd.endpoints, origin: endpointsOrigin(flags) });
  return createEtcdClient(etcd);
}

export function connect(flags: ConnectionFlags) {
  const etcd = etcdFromFlags(flags);
  return { etcd, ks: new Keyspace(etcd.prefix), client: dial(etcd, flags) };
}

export function connectionOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--endpoints <urls>', 'etcd endpoints, comma-separated: host:port or http(s)://host:port').env('CONFSYNC_ENDPOINTS'))
    .addOption(new Option('--prefix <prefix>', 'key prefix (default /confsync)').env('CONFSYNC_PREFIX'))
    .option('--config <file>', 'daemon config file (its etcd section is used)')
    .hook('preAction', (_, action) => {
      action.setOptionValue('endpointsSource', action.getOptionValueSource('endpoints'));
      action.setOptionValue('prefixSource', action.getOptionValueSource('prefix'));
    });
}

/**
 * A commander parser for an integer option: one line naming the flag (exit 2),
 * never Node's own "Received type number (NaN)".
 */
export function intArg(min: number, max: number, what = 'an integer') {
  return (value: string): number => {
    const n = /^[0-9]{1,16}$/.test(value.trim()) ? Number(value.trim()) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`Expected ${what} from ${min} to ${max}.`);
    return n;
  };
}

/**
 * JSON for a terminal or a pipe. JSON.stringify escapes C0 controls but leaves DEL, C1
 * controls and bidi overrides raw; those can only occur inside strings, where `\uNNNN`
 * is the same JSON value. (Text output goes through `printable`.)
 */
export function terminalJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Characters that must never reach a terminal raw (C0 but tab/newline, DEL, C1, bidi overrides and isolates). */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g');
const escapeU = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * YAML for a terminal or a pipe. The yaml package escapes C0 controls in double-quoted
 * scalars but prints C1 and bidi characters raw, and leaves a plain scalar plain: every
 * string (key or value) holding one is forced into double quotes, where `\uNNNN` is the
 * same YAML value. No line folding, so a long value stays one line.
 */
export function terminalYaml(value: unknown): string {
  const doc = new Document(value);
  visit(doc, {
    Scalar(_, node) {
      if (typeof node.value === 'string' && UNSAFE.test(node.value)) node.type = 'QUOTE_DOUBLE';
    },
  });
  return doc.toString({ lineWidth: 0 }).replace(UNSAFE_ALL, escapeU);
}

export type OutputFormat = 'text' | 'json' | 'yaml';

/** `-o, --output text|json|yaml` for every listing verb: text for people (escaped), json/yaml structured. */
export const outputOption = () => new Option('-o, --output <format>', 'output format').choices(['text', 'json', 'yaml']).default('text');

/** Print a structured result as JSON or YAML (never called for text). */
export function printStructured(format: Exclude<OutputFormat, 'text'>, value: unknown): void {
  process.stdout.write(format === 'json' ? `${terminalJson(value)}\n` : terminalYaml(value));
}

// ---- short flags: one meaning each across every verb (README "CLI") ----

/** `-c, --cluster`: always a cluster name (never --config, which has no short form). */
export const clusterFlag = '-c, --cluster <name>';

/** Resolves on the first SIGTERM or SIGINT; a second one exits at once. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      process.once(sig, () => process.exit(130));
      resolve(sig);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
}

// ---- secret tooling flags ----

export interface SecretFlags extends ConnectionFlags {
  cluster?: string;
  recipientsFile?: string;
  identity?: string;
  file?: string;
}

export const recipientsFileOption = () =>
  new Option('--recipients-file <file>', 'pinned recipients (YAML: clusters + admins)').env('CONFSYNC_RECIPIENTS').default(DEFAULT_RECIPIENTS_FILE);
export const identityOption = () =>
  new Option('-i, --identity <file>', 'identity file (private keys, 0600); default: identity: of --config').env('CONFSYNC_IDENTITY');

/** --identity, else the identity: field of --config. */
export async function keyringFrom(flags: SecretFlags): Promise<Keyring> {
  const file = flags.identity || (flags.config ? loadConfigFile(flags.config).identity : undefined);
  if (!file) throw new UserError('--identity FILE is required (or --config with an identity: field)');
  return loadKeyring(file);
}

// ---- value input ----

export const ALLOW_EMPTY_HELP = 'store an empty value (refused otherwise: empty input is usually a broken pipe or a wrong file)';

/** An empty value is refused unless --allow-empty: `… </dev/null` or a failed `$(…)` would otherwise roll out "". */
export function refuseEmpty(value: Buffer, from: string, allowEmpty: boolean | undefined): void {
  if (value.length === 0 && !allowEmpty) throw new UserError(`empty value from ${from}; nothing written (pass --allow-empty to store an empty value)`);
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  return all;
}

/** The secret value: --file, a hidden prompt on a terminal, or stdin to EOF. */
export async function readSecretValue(file: string | undefined): Promise<Buffer> {
  if (file) {
    return readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new UserError(`--file ${file}: cannot read (${err.code ?? err.message})`);
    });
  }
  if (process.stdin.isTTY) return promptHidden('secret value (input hidden, Enter to finish): ');
  return readStdin();
}

/** Plain config on a terminal: one visible line (Enter finishes; Ctrl-D on an empty line gives ""). */
export async function promptLine(prompt: string): Promise<Buffer> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const closed = new Promise<string>((resolve) => rl.once('close', () => resolve('')));
  try {
    return Buffer.from(await Promise.race([rl.question(prompt), closed]));
  } finally {
    rl.close();
  }
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
