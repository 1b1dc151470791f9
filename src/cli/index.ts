import { Command, CommanderError } from 'commander';
import { explainEtcdError } from '../admin/etcd-target.js';
import { UserError } from '../errors.js';
import { printable } from '../keyspace.js';
import { VERSION } from '../version.js';
import { registerConfigCommands } from './config-cmd.js';
import { registerDev } from './dev.js';
import { registerLint } from './lint.js';
import { registerStatus } from './status.js';
import { registerPlan } from './plan.js';
import { registerRun } from './run.js';
import { registerRelease } from './release.js';
import { registerRewrap } from './rewrap.js';
import { registerSecretCommands } from './secret-cmd.js';
import { registerKeygen } from './keygen.js';
import { registerRecipients } from './recipients-cmd.js';
import { registerHistory } from './history.js';
import { registerRollout } from './rollout.js';
import { registerVersion } from './version.js';
import { registerCompletion } from './completion.js';
import { registerTemplate } from './template.js';
import { registerConsole } from './console.js';

export function buildProgram(): Command {
  const program = new Command('confsync')
    .description('Config and secrets from one etcd keyspace, materialized as files and Kubernetes objects on every cluster.')
    .version(VERSION, '-V, --version')
    .configureOutput({ outputError: (text, write) => write(`confsync: ${text.replace(/^error: /, '').trimEnd()} (see --help)\n`) })
    .exitOverride()
    .addHelpText(
      'after',
      `
Short flags mean the same in every verb: -c --cluster, -i --identity, -r --recipient, -o --output (text|json|yaml).
Exit codes: 0 done; 2 the command as given cannot succeed (usage, arguments, files); 1 what it met stopped it (etcd, problems found).
Completion: source <(confsync completion bash)   (zsh: the same with zsh; fish: confsync completion fish | source)`,
    );
  registerRun(program);
  registerDev(program);
  registerConfigCommands(program);
  registerKeygen(program);
  registerSecretCommands(program);
  registerRecipients(program);
  registerRewrap(program);
  registerPlan(program);
  registerLint(program);
  registerStatus(program);
  registerRelease(program);
  registerHistory(program);
  registerRollout(program);
  registerVersion(program);
  registerCompletion(program);
  registerTemplate(program);
  registerConsole(program);
  return program;
}

/**
 * Thin entry: parse, dispatch, and turn errors into one line on stderr. Exit codes
 * (README "CLI"): 0 done; 2 the command as given cannot succeed — usage, arguments,
 * config/identity/recipients files (commander's errors, UserError); 1 it was right
 * but what it met stopped it — etcd unreachable, bad data found, anything else.
 * No stack unless CONFSYNC_DEBUG=1.
 */
export async function runCli(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help / --version exit 0; everything else commander refuses is usage (it printed the one line).
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const etcd = explainEtcdError(err);
    const message = etcd ?? String((err as Error).message ?? err);
    process.stderr.write(`confsync: ${printable(message)}\n`);
    if (process.env.CONFSYNC_DEBUG && !(err instanceof UserError)) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
