import type { Command } from 'commander';
import { createInterface } from 'node:readline/promises';
import { readRegistrations } from '../admin/recipients.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { connect, connectionOptions, recipientsFileOption, type SecretFlags } from './common.js';

/** `confsync recipients pull|ls`: the pinned recipients file (src/envelope/recipients-file.ts, src/admin/recipients.ts). */
export function registerRecipients(program: Command): void {
  const recipients = program.command('recipients').description('the pinned recipients file: pull cluster keys from etcd, list');

  connectionOptions(recipients.command('pull').description('pin the cluster keys registered under PREFIX/recipients/ after confirming their fingerprints'))
    .addOption(recipientsFileOption())
    .option('--yes', 'pin NEW clusters without asking (compare the fingerprints out of band first)')
    .option('--force', "accept a CHANGED key for an already pinned cluster (a rotation you know about; otherwise someone may have replaced it)")
    .action(async (flags: SecretFlags & { yes?: boolean; force?: boolean }) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE, { missingOk: true });
      const { ks, client } = connect(flags);
      let regs;
      try {
        regs = await readRegistrations(client, ks, pinned);
      } finally {
        client.close();
      }
      for (const line of regs.skipped) process.stderr.write(`skipping ${line}\n`);
      for (const r of regs.list) {
        const state = r.state === 'new' ? 'NEW' : r.state === 'pinned' ? 'pinned' : `CHANGED (pinned ${r.pinned!.id})`;
        process.stdout.write(`${r.cluster.padEnd(20)} ${r.registered.id}  ${state}\n`);
      }
      if (regs.seen === 0) process.stderr.write(`no keys under ${ks.recipientsPrefix()} (clusters register with "confsync keygen --register --cluster NAME")\n`);
      const added = regs.list.filter((r) => r.state === 'new');
      const changed = regs.list.filter((r) => r.state === 'changed');

      if (changed.length > 0 && !flags.force) {
        const { cluster, pinned: was, registered: now } = changed[0]!;
        const more = changed.length > 1 ? ` (and ${changed.length - 1} more changed)` : '';
        throw new UserError(`cluster "${cluster}": registered key ${now.id} differs from pinned key ${was!.id}${more}; nothing pinned. If this is a rotation you expect, re-run with --force`);
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
      for (const r of [...added, ...changed]) pinned.pin(r.cluster, r.registered);
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
