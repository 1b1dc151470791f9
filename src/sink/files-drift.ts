/**
 * Drift hints for the file sink: an object or namespace dir deleted, moved or
 * replaced by hand is seen at once and mapped back to the object ids it held,
 * debounced per id.
 *
 * Two watchers, each where it pays:
 *  - chokidar on the kind roots, depth 0: it lists their namespace dirs (a
 *    handful) and reports one added, deleted, moved or replaced;
 *  - one plain `fs.watch` per namespace dir (one inotify watch on Linux): an
 *    entry created, deleted or renamed there comes with its name, which is the
 *    object's. Nothing lists the object dirs. chokidar did, at depth 1: its first
 *    scan lstat-ed every object dir twice (readdirp's stat, then its own) and kept
 *    a record of each — 2.3 s of CPU and ~75 MiB of transient heap after every
 *    start at 20,000 objects, for events that the namespace dir's watch names anyway.
 *
 * What is not watched: anything inside an object dir (key links, `..data`,
 * payload dirs). Every projection creates a payload dir, swaps `..data` and removes the
 * old payload dir; chokidar answers each event in a watched dir by re-reading
 * that whole dir, so watching object dirs cost a rescan per write (once ~40 %
 * of the daemon's CPU per put), all for events that are our own anyway. A hand
 * change inside an object dir is found by the periodic resync: links and names
 * each `resyncSeconds` (FileSink.suspects: an lstat per object), a payload file
 * added, removed or edited in place each `verifySeconds` (an lstat per file) — where kubelet, which watches
 * nothing, reads every file at its next sync. Our own writes never chmod an existing object dir
 * (atomic-writer.ts): that would be an event in the namespace dir.
 *
 * These are hints, not facts. Watchers coalesce and drop events in fast bursts
 * (chokidar, and the kernel's inotify queue when it overflows: then every object
 * of the namespace is hinted), and cannot tell our own writes from a hand edit; the reconciler
 * re-applies on a hint, and the sink's unchanged-check makes that cheap. Events
 * for an id whose apply is in flight (or just finished) are dropped because
 * they are almost surely our own; a hand edit lost that way is still caught by
 * the next periodic or event-driven apply, because apply compares bytes.
 * A namespace dir replaced by a new one (another inode) is watched again, and
 * every object it held is hinted.
 */
import { watch, type FSWatcher } from 'chokidar';
import fs from 'node:fs';
import path from 'node:path';
import { objectId, type ObjectId, type ObjectKind } from '../keyspace.js';
import type { Logger } from '../log.js';
import { segmentProblem } from './files-paths.js';

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
  /** The objects of `kind` this sink holds in `namespace` (every namespace when undefined): hinted when their dir goes. */
  objectsIn: (kind: ObjectKind, namespace?: string) => Iterable<ObjectId>;
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

/** Starts watching; resolves once chokidar listed the kind roots and every namespace dir is watched. */
export async function startDriftWatch(opts: DriftWatchOptions): Promise<DriftWatch> {
  const debounceMs = opts.debounceMs ?? 50;
  const timers = new Map<ObjectId, NodeJS.Timeout>();
  /** Namespace dir -> its watch and the inode it was opened on. */
  const namespaces = new Map<string, { watcher: fs.FSWatcher; ino: number; root: DriftRoot; namespace: string }>();
  let closed = false;

  const fire = (id: ObjectId) => {
    timers.delete(id);
    // Checked again here: an apply that started after the event repairs the drift itself.
    if (closed || opts.isQuiet(id)) return;
    opts.onDrift(id);
  };
  const hint = (id: ObjectId) => {
    if (closed || opts.isQuiet(id)) return;
    clearTimeout(timers.get(id));
    timers.set(id, setTimeout(fire, debounceMs, id));
  };
  const hintAll = (root: DriftRoot, namespace?: string) => {
    for (const id of opts.objectsIn(root.kind, namespace)) hint(id);
  };

  /** Stops watching a namespace dir that went (or was replaced): each object it held may need its dir back. */
  const namespaceGone = (dir: string) => {
    const ns = namespaces.get(dir);
    if (!ns) return;
    namespaces.delete(dir);
    ns.watcher.close();
    hintAll(ns.root, ns.namespace);
  };

  /** Watches `<root>/<namespace>` if it is a real dir and not watched already (on this inode). */
  const watchNamespace = (root: DriftRoot, namespace: string) => {
    if (closed || segmentProblem(namespace)) return;
    const dir = path.join(root.dir, namespace);
    const st = fs.lstatSync(dir, { throwIfNoEntry: false });
    const known = namespaces.get(dir);
    if (known && st?.ino === known.ino) return;
    if (known) namespaceGone(dir); // replaced by another dir
    if (!st?.isDirectory()) return; // gone again, or a link: never watched through
    let watcher: fs.FSWatcher;
    try {
      watcher = fs.watch(dir, (_event, name) => {
        // A dir deleted or replaced under its watch reports its own name, then nothing more:
        // the inode tells.
        if (fs.lstatSync(dir, { throwIfNoEntry: false })?.ino !== st.ino) {
          namespaceGone(dir);
          return watchNamespace(root, namespace);
        }
        if (name === null) return hintAll(root, namespace); // the kernel's queue overflowed: names lost
        if (!isIgnored(name) && !segmentProblem(name)) hint(objectId(root.kind, namespace, name));
      });
    } catch (err) {
      // Gone between the lstat and the watch (chokidar reports it), or out of inotify watches.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') opts.logger.warn({ dir, err: (err as Error).message }, 'file sink drift watch: cannot watch a namespace dir; its hand changes are repaired at the periodic resync');
      return;
    }
    watcher.on('error', (err) => {
      if (namespaces.get(dir)?.watcher !== watcher) return;
      opts.logger.warn({ dir, err: err.message }, 'file sink drift watch: a namespace dir watch failed; its hand changes are repaired at the periodic resync');
      namespaces.delete(dir);
      watcher.close();
    });
    namespaces.set(dir, { watcher, ino: st.ino, root, namespace });
  };

  /** The root `p` is, or the root and namespace `p` names (`<root>/<ns>`); undefined for anything else. */
  const locate = (p: string): { root: DriftRoot; namespace?: string } | undefined => {
    const abs = path.resolve(p);
    for (const root of opts.roots) {
      if (abs === root.dir) return { root };
      if (path.dirname(abs) === root.dir) return { root, namespace: path.basename(abs) };
    }
    return undefined;
  };

  const roots: FSWatcher = watch(
    opts.roots.map((r) => r.dir),
    {
      // The initial namespace dirs arrive as addDir events: each gets its watch.
      ignoreInitial: false,
      // A link in a kind root is never followed: it could lead the watch out of the root.
      followSymlinks: false,
      atomic: false,
      // <kind root>/<ns>: the namespace dirs are listed, not read (their own fs.watch names their objects).
      depth: 0,
      ignorePermissionErrors: true,
    },
  );
  roots.on('addDir', (p) => {
    const at = locate(p);
    if (at?.namespace !== undefined) watchNamespace(at.root, at.namespace);
  });
  roots.on('unlinkDir', (p) => {
    const at = locate(p);
    if (!at) return;
    if (at.namespace !== undefined) return namespaceGone(path.join(at.root.dir, at.namespace));
    // The kind root itself: every namespace of it, and every object.
    for (const [dir, ns] of namespaces) if (ns.root === at.root) namespaceGone(dir);
    hintAll(at.root);
  });
  roots.on('error', (err) => opts.logger.warn({ err }, 'file sink drift watch error'));

  await new Promise<void>((resolve) => roots.once('ready', resolve));

  return {
    async close() {
      closed = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      for (const ns of namespaces.values()) ns.watcher.close();
      namespaces.clear();
      await roots.close();
    },
  };
}
