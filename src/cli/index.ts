import { Command, CommanderError } from 'commander';
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

export function buildProgram(): Command {
  const program = new Command('confsync')
    .description('Config and secrets from one etcd keyspace, materialized as files and Kubernetes objects on every cluster.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
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
  return program;
}

/**
 * Thin entry: parse, dispatch, and turn errors into one line on stderr.
 * User mistakes (UserError) never show a stack; anything else shows its
 * message, and its stack only with CONFSYNC_DEBUG=1.
 */
export async function runCli(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof UserError) {
      process.stderr.write(`confsync: ${printable(err.message)}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`confsync: ${printable(String((err as Error).message ?? err))}\n`);
    if (process.env.CONFSYNC_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = 1;
  }
}
