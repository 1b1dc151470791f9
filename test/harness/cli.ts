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
 * the test's own environment leaking in. `env` adds variables; an undefined one is
 * removed (e.g. `{ CONFSYNC_ENDPOINTS: undefined }` to test the other origins).
 */
export function runCli(args: string[], opts: { cwd: string; endpoint: string; input?: string; env?: Record<string, string | undefined> }): CliRun {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFSYNC_')));
  const env: Record<string, string | undefined> = { ...inherited, CONFSYNC_ENDPOINTS: opts.endpoint, ...opts.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd: opts.cwd, input: opts.input ?? '', encoding: 'utf8', env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
