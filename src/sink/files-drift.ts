/**
 * Drift hints for the file sink: chokidar on the kind roots, every event mapped
 * back to the object id whose directory it touched, debounced per id.
 *
 * What is watched: the kind roots and the namespace dirs, so an object or
 * namespace dir that is deleted, moved or replaced by hand is seen at once.
 * What is not: anything inside an object dir (key links, `..data`, payload
 * dirs). Every projection creates a payload dir, swaps `..data` and removes the
 * old payload dir; chokidar answers each event in a watched dir by re-reading
 * that whole dir, so watching object dirs cost a rescan per write (once ~40 %
 * of the daemon's CPU per put), all for events that are our own anyway. A hand
 * change inside an object dir is found by the periodic resync: links and names
 * each `resyncSeconds` (FileSink.suspects: an lstat per object), a payload file
 * added, removed or edited in place each `verifySeconds` (an lstat per file) — where kubelet, which watches
 * nothing, reads every file at its next sync. Our own writes never chmod an existing object dir
 * (atomic-writer.ts): that would be an event in the namespace dir.
 *
 * These are hints, not facts. chokidar coalesces and drops events in fast
 * bursts, and cannot tell our own writes from a hand edit; the reconciler
 * re-applies on a hint, and the sink's unchanged-check makes that cheap. Events
 * for an id whose apply is in flight (or just finished) are dropped because
 * they are almost surely our own; a hand edit lost that way is still caught by
 * the next periodic or event-driven apply, because apply compares bytes.
 */
import { watch, type FSWatcher } from 'chokidar';
import path from 'node:path';
import { objectId, type ObjectId, type ObjectKind } from '../keyspace.js';
import type { Logger } from '../log.js';
import { isWithin, segmentProblem } from './files-paths.js';

export interface DriftRoot {
  /** `<root>/configmaps` or the secrets root. */
  dir: string;
  kind: ObjectKind;
}

export interface DriftWatchOptions {
  roots: DriftRoot[];
  onDrift: (id: ObjectId) => void;
  /** True while events for `id` are probably our own writes. */
  isQuiet: (id: ObjectId) => boolean;
  logger: Logger;
  debounceMs?: number;
}

export interface DriftWatch {
  close(): Promise<void>;
}

/** Our own `..`-prefixed names (payload dirs, temp links), but not `..data`: its loss is drift. */
export function isIgnored(file: string): boolean {
  const base = path.basename(file);
  return base.startsWith('..') && base !== '..data';
}

/** The object id whose directory holds `file`, if any (pure). */
export function idForPath(roots: DriftRoot[], file: string): ObjectId | undefined {
  for (const root of roots) {
    if (!isWithin(root.dir, file)) continue;
    const parts = path.relative(root.dir, file).split(path.sep);
    if (parts.length < 2) return undefined;
    const [namespace, name] = parts as [string, string];
    if (segmentProblem(namespace) || segmentProblem(name)) return undefined;
    return objectId(root.kind, namespace, name);
  }
  return undefined;
}

/** Starts watching; resolves once chokidar finished its initial scan. */
export async function startDriftWatch(opts: DriftWatchOptions): Promise<DriftWatch> {
  const debounceMs = opts.debounceMs ?? 50;
  const timers = new Map<ObjectId, NodeJS.Timeout>();
  let closed = false;

  const fire = (id: ObjectId) => {
    timers.delete(id);
    // Checked again here: an apply that started after the event repairs the drift itself.
    if (closed || opts.isQuiet(id)) return;
    opts.onDrift(id);
  };

  const watcher: FSWatcher = watch(
    opts.roots.map((r) => r.dir),
    {
      ignoreInitial: true,
      // Never follow `..data` or key links: each object would be walked twice,
      // and a hand-made link could lead the watcher out of the root.
      followSymlinks: false,
      // `atomic` delays unlink events by 100 ms, pushing our own step (7) removals
      // past the quiet window; we want events as they happen.
      atomic: false,
      // <kind root>/<ns>/<name>: namespace dirs are watched, object dirs only listed.
      depth: 1,
      ignored: (file: string) => isIgnored(file),
      ignorePermissionErrors: true,
    },
  );

  watcher.on('all', (_event, file) => {
    const id = idForPath(opts.roots, path.resolve(file));
    if (!id || closed || opts.isQuiet(id)) return;
    clearTimeout(timers.get(id));
    timers.set(id, setTimeout(fire, debounceMs, id));
  });
  watcher.on('error', (err) => opts.logger.warn({ err }, 'file sink drift watch error'));

  await new Promise<void>((resolve) => watcher.once('ready', resolve));

  return {
    async close() {
      closed = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      await watcher.close();
    },
  };
}
