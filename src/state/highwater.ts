/**
 * Replay high-water marks: per logical secret path, the highest sealed version
 * (envelope format v2, ms since the epoch; v1 counts as 0) this daemon has
 * accepted. An envelope below its path's mark is an older value put back — a
 * replay — and is refused (reconcile/secrets.ts). Equal passes: the same envelope
 * read again after a re-list or a restart must open.
 *
 * Kept in `<stateDir>/highwater.json` (file 0600, dir 0700):
 *
 *     {"format":1,"marks":{"global/secrets/default/db/password":1796395200000, …}}
 *
 * Marks only go up, and entries are never dropped when a path is deleted: a
 * deleted secret whose old envelope is put back must still be refused. So the
 * file grows with the number of distinct secret paths this daemon ever accepted
 * (about path length + 20 bytes each: 100 000 paths ≈ 8 MB), and shrinks only by
 * hand (docs/security.md: deleting it drops protection until values are re-applied).
 *
 * Writing, debounced so a burst of accepts costs one write:
 *  (1) accept() raises the mark in memory and schedules a flush in FLUSH_MS;
 *  (2) flush() serialises the map, writes `highwater.json.tmp-<pid>` (0600) and fsyncs it;
 *  (3) renames it over highwater.json and fsyncs the dir: a crash leaves the old
 *      file or the new one, never half of one;
 *  (4) close() flushes what is pending. A crash loses at most FLUSH_MS of raises;
 *      those marks come back when the daemon next opens the same values.
 * If the dir cannot be created or written, the marks are kept in memory only and
 * one warning says so: protection then lasts for this process only.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { writeDurably } from './durable-file.js';
import type { Logger } from '../log.js';

import { HIGHWATER_FILE } from './location.js';

export { HIGHWATER_FILE };
const FLUSH_MS = 500;

export class HighWater {
  private readonly marks = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  private warned = false;

  /** `file` undefined: memory only. */
  private constructor(
    private readonly file: string | undefined,
    private readonly logger: Logger,
  ) {}

  /** Memory only: for `plan`, tests, or a daemon without a usable state dir. */
  static inMemory(logger: Logger): HighWater {
    return new HighWater(undefined, logger);
  }

  /**
   * Creates `stateDir` (0700) if needed and loads the marks; never throws for a
   * bad dir or file. `readFrom`: another dir to read them from this once (the old
   * default stateDir, state/location.ts); they are written to `stateDir`.
   */
  static async load(stateDir: string, logger: Logger, readFrom = stateDir): Promise<HighWater> {
    const file = path.join(stateDir, HIGHWATER_FILE);
    try {
      await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      logger.warn({ stateDir, code: (err as NodeJS.ErrnoException).code }, 'state dir cannot be created; replay high-water marks kept in memory only (an old envelope put back while the daemon is down is not detected)');
      return HighWater.inMemory(logger);
    }
    const hw = new HighWater(file, logger);
    const source = path.join(readFrom, HIGHWATER_FILE);
    let text: string;
    try {
      text = await fs.readFile(source, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        logger.warn({ file: source, code: (err as NodeJS.ErrnoException).code }, 'replay high-water file cannot be read; starting without marks');
      }
      return hw;
    }
    const marks = parseMarks(text);
    if (!marks) {
      // Kept aside for inspection; the next flush writes a fresh file.
      await fs.rename(source, `${source}.bad`).catch(() => undefined);
      logger.warn({ file: source }, `replay high-water file does not parse (moved to ${HIGHWATER_FILE}.bad); starting without marks: an old envelope put back before its path's newer value is re-applied will be accepted`);
      return hw;
    }
    for (const [p, v] of marks) hw.marks.set(p, v);
    // Read from elsewhere: written to our own dir at once.
    if (source !== file) {
      hw.dirty = true;
      await hw.flush();
    }
    return hw;
  }

  get size(): number {
    return this.marks.size;
  }

  /** The mark for `logicalPath`: 0 when nothing was accepted there. */
  mark(logicalPath: string): number {
    return this.marks.get(logicalPath) ?? 0;
  }

  /** Every mark (path → version), for the local snapshot. */
  entries(): Map<string, number> {
    return new Map(this.marks);
  }

  /** Raises marks from another copy (the local snapshot's); marks only go up. */
  merge(marks: ReadonlyMap<string, number>): number {
    let raised = 0;
    for (const [p, v] of marks) if (v > this.mark(p)) this.accept(p, v), raised++;
    return raised;
  }

  /** Raises the mark (never lowers it) and schedules a write. */
  accept(logicalPath: string, version: number): void {
    if (version <= this.mark(logicalPath)) return;
    this.marks.set(logicalPath, version);
    this.dirty = true;
    // (1)
    if (this.file && !this.timer) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Writes pending marks now; resolves when they are on disk (or a warning was logged). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(() => this.write());
    return this.writing;
  }

  /** (4) */
  async close(): Promise<void> {
    await this.flush();
  }

  private async write(): Promise<void> {
    if (!this.file || !this.dirty) return;
    this.dirty = false;
    // (2)
    const body = JSON.stringify({ format: 1, marks: Object.fromEntries(this.marks) });
    try {
      await writeDurably(this.file, body); // (3)
      if (this.warned) this.logger.info({ file: this.file }, 'replay high-water marks written again');
      this.warned = false;
    } catch (err) {
      this.dirty = true; // retried with the next accept or at close
      if (!this.warned) this.logger.warn({ file: this.file, code: (err as NodeJS.ErrnoException).code }, 'replay high-water marks cannot be written; kept in memory, protection lasts for this process only until a write succeeds');
      this.warned = true;
    }
  }
}

/** The marks in a file's text, or undefined when it is not exactly what write() produces. */
export function parseMarks(text: string): Map<string, number> | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || (doc as { format?: unknown }).format !== 1) return undefined;
  const marks = (doc as { marks?: unknown }).marks;
  if (typeof marks !== 'object' || marks === null || Array.isArray(marks)) return undefined;
  const out = new Map<string, number>();
  for (const [p, v] of Object.entries(marks)) {
    if (!Number.isSafeInteger(v) || (v as number) < 0) return undefined;
    out.set(p, v as number);
  }
  return out;
}
