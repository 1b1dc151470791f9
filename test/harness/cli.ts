import { spawnSync } from 'node:child_process';
import { MAIN } from './daemon.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The built CLI as a child process, as an operator runs it: in `cwd`, pointed at
 * `endpoint` through $CONFSYNC_ENDPOINTS, with no other CONFSYNC_* variable of
 * the test's own environment leaking in.
 */
export function runCli(args: string[], opts: { cwd: string; endpoint: string; input?: string }): CliRun {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd: opts.cwd, input: opts.input ?? '', encoding: 'utf8', env: { ...env, CONFSYNC_ENDPOINTS: opts.endpoint } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
