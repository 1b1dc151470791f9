/**
 * `confsync history` and `confsync rollback`: flags and printing; the work is in
 * src/admin/history.ts and src/admin/rollback.ts. Config values are shown escaped
 * and cut short; secrets only by name, size and recipients — never a value.
 */
import { Option, type Command } from 'commander';
import { createInterface } from 'node:readline/promises';
import { parseRef } from '../admin/refs.js';
import { readHistory, type KeyChange } from '../admin/history.js';
import { commitRollback, planRollback, resealPuts } from '../admin/rollback.js';
import { envelopeRecipients } from '../envelope/envelope.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { isSealed, printable, type ObjectKind } from '../keyspace.js';
import { clusterFlag, connect, connectionOptions, identityOption, keyringFrom, outputOption, printStructured, recipientsFileOption, type OutputFormat, type SecretFlags } from './common.js';

interface HistoryFlags extends SecretFlags {
  kind: ObjectKind;
  output: OutputFormat;
}

interface RollbackFlags extends SecretFlags {
  kind: ObjectKind;
  toRevision: string;
  yes?: boolean;
}

/** Config text longer than this is cut, with its byte count. */
const SHOW_BYTES = 80;

const kindOption = () => new Option('--kind <kind>', 'object kind').choices(['configmaps', 'secrets']).default('configmaps');

export function registerHistory(program: Command): void {
  connectionOptions(
    program
      .command('history <ref>')
      .description('the revisions etcd still keeps of <namespace>/<name>[/<key>], newest first: which keys changed and how (secrets: only to whom they are sealed)')
      .option(clusterFlag, 'the clusters/<name>/ scope instead of global')
      .addOption(kindOption())
      .addOption(outputOption())
      .addOption(recipientsFileOption()),
  ).action(async (ref: string, flags: HistoryFlags) => {
    const t = parseRef(flags.kind, ref, flags, ref.split('/').length === 3 ? 3 : 2);
    const sealed = isSealed(flags.kind);
    const pinned = sealed ? await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE, { missingOk: true }).catch(() => undefined) : undefined;
    const { ks, client } = connect(flags);
    try {
      const h = await readHistory({ client, ks, scope: t.scope, ref: t.ref, key: t.key });
      const show = (v: Buffer | undefined) => (v === undefined ? undefined : sealed ? sealedTo(v, pinned) : shown(v));
      const where = ks.relative(ks.kindPrefix(t.scope, t.ref.kind, t.ref.namespace, t.ref.name)) + (t.key ?? '');
      const compacted = h.compactRevision > 0 ? `history before revision ${h.compactRevision} was compacted` : undefined;
      if (flags.output !== 'text') {
        const change = (c: KeyChange) => ({ key: c.key, type: c.type, before: describe(c.before, show), after: describe(c.after, show) });
        const revisions = h.revisions.map((r) => ({ revision: r.revision, changes: r.changes.map(change) }));
        printStructured(flags.output, { object: where, head: h.head, compactRevision: h.compactRevision, revisions });
        return;
      }
      process.stdout.write(`${printable(where)}  (head revision ${h.head}${compacted ? `; ${compacted}` : ''}; etcd keeps no times)\n`);
      for (const r of h.revisions) {
        r.changes.forEach((c, i) => {
          const was = c.before === undefined ? '(new)' : show(c.before);
          const what = c.type === 'delete' ? `delete ${printable(c.key)}  was ${was}` : `put    ${printable(c.key)}  ${was} -> ${show(c.after)}`;
          process.stdout.write(`${i === 0 ? `rev ${r.revision}`.padEnd(12) : ' '.repeat(12)}${what}\n`);
        });
      }
      if (h.revisions.length === 0) process.stderr.write(`no changes kept under ${printable(where)}${compacted ? ` (${compacted})` : ''}\n`);
    } finally {
      client.close();
    }
  });

  connectionOptions(
    program
      .command('rollback <ref>')
      .description('write <namespace>/<name> back as it was at --to-revision, in one transaction (shows the diff; asks, or needs --yes)')
      .requiredOption('--to-revision <rev>', 'the etcd revision to go back to (see `confsync history`)')
      .option(clusterFlag, 'the clusters/<name>/ scope instead of global')
      .addOption(kindOption())
      .option('--yes', 'write without asking (required when stdin is not a terminal)')
      .addOption(identityOption())
      .addOption(recipientsFileOption()),
  ).action(async (ref: string, flags: RollbackFlags) => {
    const t = parseRef(flags.kind, ref, flags, 2);
    if (!/^[0-9]{1,15}$/.test(flags.toRevision)) throw new UserError(`--to-revision "${printable(flags.toRevision.slice(0, 40))}": expected a revision number`);
    const sealed = isSealed(flags.kind);
    // Secrets: refuse before reading anything when the identity or recipients are missing.
    const keyring = sealed ? await keyringFrom(flags).catch((err: Error) => Promise.reject(new UserError(`secrets are re-sealed on rollback: ${err.message}`))) : undefined;
    const pinned = sealed ? await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE) : undefined;
    const recipients = pinned?.forScope(t.scope) ?? [];
    const { ks, client } = connect(flags);
    try {
      const plan = await planRollback(client, ks, t.scope, t.ref, Number(flags.toRevision));
      const where = printable(ks.relative(ks.kindPrefix(t.scope, t.ref.kind, t.ref.namespace, t.ref.name)));
      if (plan.puts.length + plan.deletes.length === 0) {
        process.stdout.write(`${where}: already as at revision ${plan.toRevision}; nothing to do\n`);
        return;
      }
      const name = (key: string) => printable(key.slice(ks.kindPrefix(t.scope, t.ref.kind, t.ref.namespace, t.ref.name).length));
      const lines = [`${where}: back to revision ${plan.toRevision} (read at head ${plan.head})`];
      for (const p of plan.puts) lines.push(sealed ? `  put    ${name(p.key)}  (sealed; re-sealed to ${recipients.map((r) => pinned?.describe(r.id) ?? r.id).join(', ')})` : `  put    ${name(p.key)}  ${p.current ? shown(p.current) : '(absent)'} -> ${shown(p.value)}`);
      for (const d of plan.deletes) lines.push(`  delete ${name(d.key)}`);
      process.stdout.write(`${lines.join('\n')}\n`);
      if (!flags.yes) {
        if (!process.stdin.isTTY) throw new UserError('not a terminal: pass --yes to roll back (nothing written)');
        if (!(await confirm(`write these ${plan.puts.length + plan.deletes.length} change(s) in one transaction? [y/N] `))) throw new UserError('not confirmed; nothing written');
      }
      const values = await resealPuts(plan, ks, keyring, recipients);
      const revision = await commitRollback(client, ks, plan, values);
      process.stdout.write(`rolled back ${plan.puts.length} put(s), ${plan.deletes.length} delete(s) @ revision ${revision}\n`);
    } finally {
      client.close();
      keyring?.dispose();
    }
  });
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

/** A config value for one line: quoted and escaped, cut at SHOW_BYTES with its size; binary as a size. */
function shown(v: Buffer): string {
  const text = v.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(v)) return `<binary, ${v.length} bytes>`;
  if (v.length <= SHOW_BYTES) return `"${printable(text)}"`;
  // A cut in the middle of a UTF-8 sequence decodes to U+FFFD: drop it.
  return `"${printable(v.subarray(0, SHOW_BYTES).toString('utf8').replace(/\uFFFD+$/, ''))}"… (${v.length} bytes)`;
}

/** A sealed value: who it is sealed to (fingerprints from the header, never opened), and its size. */
function sealedTo(v: Buffer, pinned: RecipientsFile | undefined): string {
  try {
    return `<sealed to ${envelopeRecipients(v).map((id) => pinned?.describe(id) ?? id).join(', ')}; ${v.length} bytes>`;
  } catch {
    return `<not an openable envelope; ${v.length} bytes>`;
  }
}

function describe(v: Buffer | undefined, show: (v: Buffer) => string | undefined): { bytes: number; shown: string } | null {
  return v === undefined ? null : { bytes: v.length, shown: show(v)! };
}
