/**
 * Where the daemon's own state lives, and the way from the old default.
 *
 * Up to 0.1.0 `stateDir` defaulted to /var/lib/confsync: the files root of the
 * systemd unit, the Dockerfile and the DaemonSet, a dir other services and pods
 * read (0755, a hostPath). The snapshot is sealed and the marks are not secret,
 * but neither belongs where consumers read config. The default is now a dir of
 * its own, kept 0700. A daemon left on the default whose new dir holds no state
 * yet reads the old default's files once (the next writes go to the new dir; the
 * old files are left for the operator to remove: docs/operations.md).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';

/** The files in a state dir (state/snapshot.ts, state/highwater.ts). */
export const SNAPSHOT_FILE = 'snapshot';
export const HIGHWATER_FILE = 'highwater.json';
/** The file sink's stamps across a restart (sink/files.ts): object dirs' lstat, no content. */
export const FILE_STAMPS_FILE = 'files-stamps.json';

export const DEFAULT_STATE_DIR = '/var/lib/confsync-state';
/** The default up to 0.1.0 (the files root of the shipped unit and manifests). */
export const OLD_DEFAULT_STATE_DIR = '/var/lib/confsync';

const STATE_FILES = [SNAPSHOT_FILE, HIGHWATER_FILE];

async function holdsState(dir: string): Promise<boolean> {
  for (const f of STATE_FILES) {
    if (await fs.lstat(path.join(dir, f)).then((s) => s.isFile(), () => false)) return true;
  }
  return false;
}

/**
 * The dir to READ state from at start: `stateDir`, or the old default when
 * `stateDir` is the (new) default, holds no state yet, and the old one does.
 * Writes always go to `stateDir`.
 */
export async function stateDirToRead(stateDir: string, logger: Logger, defaults = { current: DEFAULT_STATE_DIR, old: OLD_DEFAULT_STATE_DIR }): Promise<string> {
  const { current, old } = defaults;
  if (path.resolve(stateDir) !== path.resolve(current)) return stateDir;
  if (await holdsState(stateDir)) return stateDir;
  if (!(await holdsState(old))) return stateDir;
  logger.warn(
    { from: old, to: stateDir },
    `state found at the old default stateDir ${old} (the files root): read from there this once, written to ${stateDir} from now on; remove ${old}/{${STATE_FILES.join(',')}} once ${stateDir} holds them`,
  );
  return old;
}

/** True when `dir` is `root` or inside it (lexically; both resolved). */
export function isInside(dir: string, root: string): boolean {
  const rel = path.relative(path.resolve(root), path.resolve(dir));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
