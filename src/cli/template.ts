import type { Command } from 'commander';
import { desiredFromEtcd } from '../admin/desired-state.js';
import { renderOffline } from '../admin/templates.js';
import { loadConfigFile } from '../config/load.js';
import { loadIdentity } from '../daemon.js';
import { loadKeyring } from '../envelope/identity.js';
import { UserError } from '../errors.js';
import { printable } from '../keyspace.js';
import { createLogger } from '../log.js';
import { connectionOptions, dial, identityOption, outputOption, overridesFrom, printStructured } from './common.js';

/** Rendered text for a terminal: control characters shown escaped (it comes from etcd), lines kept. */
const forTerminal = (text: string) => (process.stdout.isTTY ? text.split('\n').map(printable).join('\n') : text);

export function registerTemplate(program: Command): void {
  const template = program.command('template').description('templates (README "Templates")');
  connectionOptions(
    template
      .command('render')
      .description('print what the daemon would write for each template (or --name N), from etcd as it is now; secret values masked unless --show-secrets')
      .option('--name <name>', 'only this template; its text is printed as is (no header)')
      .option('--show-secrets', 'print secret values (opens them with --identity or the config\'s identity:)')
      .addOption(identityOption())
      .addOption(outputOption()),
  ).action(async (flags) => {
    if (!flags.config) throw new UserError('template render: --config FILE is required (the daemon\'s config: its templates:, cluster and etcd)');
    const cfg = loadConfigFile(flags.config, overridesFrom(flags));
    if (cfg.templates.length === 0) throw new UserError(`${flags.config} has no templates: (see README "Templates")`);
    if (flags.name !== undefined && !cfg.templates.some((t) => t.name === flags.name)) {
      throw new UserError(`--name ${printable(flags.name)}: no such template in ${flags.config} (has: ${cfg.templates.map((t) => t.name).join(', ') || 'none'})`);
    }
    if (flags.showSecrets && !flags.identity && !cfg.identity) throw new UserError('--show-secrets needs -i IDENTITY (or an identity: in the config)');
    const logger = createLogger('error', process.stderr);
    const keyring = flags.identity ? await loadKeyring(flags.identity) : await loadIdentity(cfg);
    const client = dial(cfg.etcd, flags);
    try {
      const { reconciler, revision } = await desiredFromEtcd(cfg, client, logger, keyring);
      const results = await renderOffline(cfg, reconciler, flags.showSecrets ? 'allow' : 'mask', flags.name);
      await reconciler.close();
      if (flags.output !== 'text') return printStructured(flags.output, { revision, cluster: cfg.cluster, templates: results });
      for (const r of results) {
        if (r.error) process.stderr.write(`confsync: template ${r.name}: ${printable(r.error)}; ${r.dest} would keep its content\n`);
        else if (flags.name !== undefined) process.stdout.write(forTerminal(r.text!));
        else process.stdout.write(`# ---- template ${r.name} -> ${r.dest} (mode ${r.mode}${r.action ? `, ${r.action}` : ''})\n${forTerminal(r.text!)}${r.text!.endsWith('\n') ? '' : '\n'}`);
      }
      if (results.some((r) => r.error)) process.exitCode = 1;
    } finally {
      client.close();
      keyring?.dispose();
    }
  });
}
