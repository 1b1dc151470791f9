import fs from 'node:fs';
import path from 'node:path';

/**
 * Every path below `dir`, as a user's reader would walk a tree the daemon is
 * swapping under it: links are listed, never followed; a directory that vanishes
 * between being listed and being read (an old `..<timestamp>` payload dir the
 * daemon just removed) is skipped rather than failing the walk. `payloads: false`
 * leaves out the contents of `..`-prefixed dirs (what a reader sees through `..data`).
 */
export function walk(dir: string, opts: { payloads?: boolean } = {}): string[] {
  const out: string[] = [];
  const visit = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      out.push(p);
      if (e.isDirectory() && (opts.payloads !== false || !e.name.startsWith('..'))) visit(p);
    }
  };
  visit(dir);
  return out;
}
