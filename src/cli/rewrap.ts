/**
 * `confsync rewrap`: flags → src/admin/rewrap.ts; progress on stderr, the
 * summary on stdout, exit 1 while any secret is still sealed to an old set.
 */
import type { Command } from 'commander';
import { parseListRef, scopeFromFlags } from '../admin/refs.js';
import { clusterScopes, LEFT_BEHIND, OUTCOME_NOTES, rewrap, type Outcome } from '../admin/rewrap.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { GLOBAL, nameError, namespaceError, type Scope } from '../keyspace.js';
import { clusterFlag, connect, connectionOptions, identityOption, intArg, keyringFrom, recipientsFileOption, type SecretFlags } from './common.js';

interface RewrapFlags extends SecretFlags {
  all?: boolean;
  under?: string;
  concurrency: number;
}

export function registerRewrap(program: Command): void {
  connectionOptions(
    program
      .command('rewrap')
      .description('re-seal existing secrets to the current pinned recipients of their scope (rotation, adding/removing clusters or admins)')
      .option(clusterFlag, 'only clusters/<name>/secrets (default: global only)')
      .option('--all', 'global and every clusters/<name> scope found in etcd')
      .option('--under <ns[/name]>', 'only secrets under this namespace or namespace/name')
      .addOption(identityOption())
      .addOption(recipientsFileOption())
      .option('--concurrency <n>', 'secrets in flight', intArg(1, 1024), 32),
  ).action(async (flags: RewrapFlags) => {
    if (flags.cluster && flags.all) throw new UserError('--cluster and --all: choose one');
    if (!Number.isInteger(flags.concurrency) || flags.concurrency < 1 || flags.concurrency > 1024) throw new UserError('--concurrency must be an integer 1…1024');
    const under = parseListRef(flags.under);
    const err = under.namespace === undefined ? undefined : (namespaceError(under.namespace) ?? (under.name !== undefined ? nameError(under.name) : undefined));
    if (err) throw new UserError(`--under: ${err}`);
    const scope = flags.cluster ? scopeFromFlags(flags) : undefined;
    const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
    if (scope) pinned.forScope(scope); // an unpinned --cluster fails before any work
    const keyring = await keyringFrom(flags);
    const { ks, client } = connect(flags);
    const warn = (line: string) => process.stderr.write(`${line}\n`);
    const progress = new Progress(() => `rewrapped ${counts?.rewrapped ?? 0}, unchanged ${counts?.unchanged ?? 0}`);
    let counts: Readonly<Record<Outcome, number>> | undefined;
    try {
      const scopes: Scope[] = scope ? [scope] : [GLOBAL];
      if (flags.all) scopes.push(...(await clusterScopes(client, ks, warn)));
      const summary = await rewrap({
        client,
        ks,
        scopes,
        under,
        pinned,
        keyring,
        concurrency: flags.concurrency,
        warn,
        progress: {
          start: (total) => progress.start(total),
          tick: (c) => {
            counts = c;
            progress.tick();
          },
        },
      }).finally(() => progress.finish());
      report(summary.counts, summary.conflicts, summary.notes, progress);
    } finally {
      client.close();
      keyring.dispose();
    }
  });
}

function report(counts: Record<Outcome, number>, conflicts: number, notes: string[], progress: Progress): void {
  if (notes.length > 0) process.stderr.write(`keys not rewrapped (first ${notes.length}):\n${notes.map((n) => `  ${n}`).join('\n')}\n`);
  const secs = progress.elapsedMs() / 1000;
  const lines = (Object.keys(OUTCOME_NOTES) as Outcome[])
    .filter((o) => counts[o] > 0 || o === 'rewrapped' || o === 'unchanged' || o === 'not-a-recipient')
    .map((o) => `${o}: ${counts[o]}\t(${OUTCOME_NOTES[o]})`);
  lines.push(`conflicts-retried: ${conflicts}\t(written by someone else meanwhile: re-read and redone)`);
  lines.push(`elapsed: ${secs.toFixed(2)} s (${Math.round(progress.done / Math.max(secs, 0.001))} keys/s over ${progress.done} keys)`);
  process.stdout.write(`${lines.join('\n')}\n`);
  const behind = LEFT_BEHIND.reduce((n, o) => n + counts[o], 0);
  if (behind > 0) {
    process.stderr.write(`confsync: ${behind} secret(s) are still sealed to their old recipients (see above); do not retire old keys yet\n`);
    process.exitCode = 1;
  }
}

/** Progress on stderr: a bar redrawn in place on a terminal, a line every few seconds otherwise. */
class Progress {
  done = 0;
  private total = 0;
  private started = Date.now();
  private readonly tty = !!process.stderr.isTTY;
  private timer?: NodeJS.Timeout;
  private shown = -1;

  constructor(private readonly detail: () => string) {}

  start(total: number): void {
    this.total = total;
    this.started = Date.now();
    this.timer = setInterval(() => this.render(), this.tty ? 100 : 2000);
    this.timer.unref();
  }

  tick(): void {
    this.done++;
  }

  elapsedMs(): number {
    return Date.now() - this.started;
  }

  finish(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.render();
    if (this.tty) process.stderr.write('\n');
  }

  private render(): void {
    if (this.done === this.shown && !this.tty) return;
    this.shown = this.done;
    const total = Math.max(this.total, this.done);
    const pct = total === 0 ? 100 : Math.floor((100 * this.done) / total);
    const rate = Math.round(this.done / Math.max(this.elapsedMs() / 1000, 0.001));
    if (this.tty) {
      const width = 24;
      const fill = Math.round((width * pct) / 100);
      process.stderr.write(`\r\x1b[K[${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${this.done}/${total} ${pct}%  ${rate}/s  ${this.detail()}`);
    } else {
      process.stderr.write(`rewrap: ${this.done}/${total} (${pct}%), ${rate}/s, ${this.detail()}\n`);
    }
  }
}
