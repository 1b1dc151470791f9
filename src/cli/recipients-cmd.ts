import { Option, type Command } from 'commander';
import { createInterface } from 'node:readline/promises';
import { parseAccepts, planPull, readRegistrations } from '../admin/recipients.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { printable } from '../keyspace.js';
import { connect, connectionOptions, outputOption, printStructured, recipientsFileOption, type OutputFormat, type SecretFlags } from './common.js';

/** `confsync recipients pull|ls`: the pinned recipients file (src/envelope/recipients-file.ts, src/admin/recipients.ts). */
export function registerRecipients(program: Command): void {
  const recipients = program.command('recipients').description('the pinned recipients file: pull cluster keys from etcd, list');

  connectionOptions(recipients.command('pull').description('pin the cluster keys registered under PREFIX/recipients/ after confirming their fingerprints'))
    .addOption(recipientsFileOption())
    .option('--yes', 'pin NEW clusters without asking (compare the fingerprints out of band first)')
    .option('--accept <cluster=fingerprint>', 'pin this cluster\'s registered key (NEW or CHANGED) if it has exactly this fingerprint (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    // Kept only to explain its removal: it re-pinned every changed key at once.
    .addOption(new Option('--force').hideHelp())
    .action(async (flags: SecretFlags & { yes?: boolean; accept: string[]; force?: boolean }) => {
      if (flags.force) {
        throw new UserError(
          'recipients pull --force is gone: it re-pinned every changed key at once, including one an attacker swapped in. Compare each changed fingerprint with the one keygen printed on that cluster, then pin it with --accept CLUSTER=FINGERPRINT (repeatable)',
        );
      }
      const accepts = parseAccepts(flags.accept);
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
        const mark = r.state !== 'pinned' && accepts.get(r.cluster) === r.registered.id ? '  accepted' : '';
        process.stdout.write(`${r.cluster.padEnd(20)} ${r.registered.id}  ${state}${mark}\n`);
      }
      if (regs.seen === 0) process.stderr.write(`no keys under ${ks.recipientsPrefix()} (clusters register with "confsync keygen --register --cluster NAME")\n`);
      const plan = planPull(ks, regs.list, accepts);

      const problems: string[] = [];
      let confirmedNew = plan.unconfirmedNew.length > 0 && !!flags.yes;
      if (plan.unconfirmedNew.length > 0 && !flags.yes) {
        if (process.stdin.isTTY) {
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          const answer = await rl.question(`pin ${plan.unconfirmedNew.length} new cluster key(s) listed above? [y/N] `).finally(() => rl.close());
          confirmedNew = /^y(es)?$/i.test(answer.trim());
          if (!confirmedNew) problems.push(`${plan.unconfirmedNew.length} new cluster key(s) not confirmed, not pinned`);
        } else {
          problems.push(
            `${plan.unconfirmedNew.length} new cluster key(s) not pinned: compare the fingerprints above out of band, then re-run with --yes or --accept CLUSTER=FINGERPRINT (stdin is not a terminal, cannot ask)`,
          );
        }
      }
      if (plan.unacceptedChanged.length > 0) {
        const which = plan.unacceptedChanged.map((r) => `${r.cluster} (pinned ${r.pinned!.id}, registered ${r.registered.id})`).join(', ');
        problems.push(
          `${plan.unacceptedChanged.length} changed cluster key(s) not accepted, still pinned to their old keys: ${which}. Someone who can write etcd may have replaced them; if one is a rotation you expect, compare its new fingerprint with the one keygen printed on that cluster and re-run with --accept CLUSTER=FINGERPRINT`,
        );
      }

      const toPin = [...plan.accepted, ...(confirmedNew ? plan.unconfirmedNew : [])];
      for (const r of toPin) pinned.pin(r.cluster, r.registered);
      if (toPin.length > 0) {
        await pinned.save();
        const added = toPin.filter((r) => r.state === 'new').length;
        process.stderr.write(`pinned ${added} new and ${toPin.length - added} changed cluster key(s) in ${pinned.path}\n`);
      }
      if (problems.length > 0) throw new UserError(problems.join('; '));
    });

  recipients
    .command('ls')
    .description('show the pinned clusters and admins with their fingerprints')
    .addOption(recipientsFileOption())
    .addOption(outputOption())
    .action(async (flags: SecretFlags & { output: OutputFormat }) => {
      const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
      if (flags.output !== 'text') {
        const clusters = [...pinned.clusters].map(([name, r]) => ({ cluster: name, fingerprint: r.id, recipient: r.text }));
        const admins = pinned.admins.map((r) => ({ fingerprint: r.id, recipient: r.text }));
        return printStructured(flags.output, { file: pinned.path, clusters, admins });
      }
      for (const [name, r] of pinned.clusters) process.stdout.write(`cluster  ${printable(name).padEnd(20)} ${r.id}  ${r.text}\n`);
      for (const r of pinned.admins) process.stdout.write(`admin    ${'-'.padEnd(20)} ${r.id}  ${r.text}\n`);
      if (pinned.clusters.size + pinned.admins.length === 0) process.stderr.write(`${pinned.path} pins nothing\n`);
    });
}
