/**
 * Bad input, reported once: each distinct (path, reason) is logged and counted
 * the first time it is seen, so a resync does not repeat it. The memory of what
 * was reported is bounded — keys come from anyone who can write etcd, and a
 * writer churning bad keys must not grow the daemon without limit; past the
 * bound it starts over (at worst a problem is logged again).
 *
 * Problems are also kept while they are open, by owner (an object, a key, a
 * sink's object): `stats.lastError` is the newest open one, so status stops
 * showing an error once its owner is fixed (rebuilt clean, key rewritten or
 * deleted, sink write succeeded). A problem fixed and then reintroduced is
 * logged and counted again.
 */
import type { Problem } from '../desired/build.js';
import type { Logger } from '../log.js';
import type { ProblemCounter, ReconcileEvent, ReconcileStats } from './events.js';

const MAX_REMEMBERED = 10_000;

const tagOf = (p: Problem): string => `${p.path}\0${p.reason}`;

export class ProblemReporter {
  private readonly reported = new Set<string>();
  /** Open problems by owner, oldest first (a Map keeps insertion order). */
  private readonly open = new Map<string, Problem[]>();
  private lastOwner?: string;

  constructor(
    private readonly stats: ReconcileStats,
    private readonly logger: Logger,
    private readonly emit: (e: ReconcileEvent) => void,
  ) {}

  /** Report `p` and keep it open under `owner` (default: its path) until that owner is cleared. */
  report(p: Problem, counter: ProblemCounter = p.unopened ? 'decryptFailures' : 'invalidInputs', owner = p.path): void {
    this.keep(owner, [p]);
    const tag = tagOf(p);
    if (this.reported.has(tag)) return;
    if (this.reported.size >= MAX_REMEMBERED) this.reported.clear();
    this.reported.add(tag);
    this.stats[counter]++;
    this.emit({ type: 'problem', counter, problem: p });
    this.logger.warn({ path: p.path, reason: p.reason }, counter === 'invalidInputs' ? 'invalid input skipped; last good state kept' : 'secret not opened; last good value kept');
  }

  reportAll(problems: Problem[]): void {
    for (const p of problems) this.report(p);
  }

  /** `owner`'s problems are now exactly `problems` (none: it is fixed). */
  setFor(owner: string, problems: Problem[]): void {
    const now = new Set(problems.map(tagOf));
    for (const old of this.open.get(owner) ?? []) if (!now.has(tagOf(old))) this.reported.delete(tagOf(old));
    if (this.open.delete(owner) && owner === this.lastOwner) this.refresh();
    for (const p of problems) this.report(p, undefined, owner);
  }

  /** Every owner `matches` accepts is fixed (a fresh snapshot re-reports what is still wrong). */
  clearWhere(matches: (owner: string) => boolean): void {
    for (const owner of [...this.open.keys()]) if (matches(owner)) this.setFor(owner, []);
  }

  /** A failure that is not bad input (a sink write): open until `setFor(owner, [])`. */
  keep(owner: string, problems: Problem[]): void {
    const list = (this.open.get(owner) ?? []).filter((o) => !problems.some((p) => tagOf(p) === tagOf(o)));
    this.open.delete(owner); // re-inserted last: the newest problem is the last entry
    this.open.set(owner, [...list, ...problems].slice(-16));
    if (this.open.size > MAX_REMEMBERED) this.open.delete(this.open.keys().next().value!);
    this.lastOwner = owner;
    this.stats.lastError = this.open.get(owner)!.at(-1);
  }

  /** The newest open problem, after its owner was removed (a walk, only then). */
  private refresh(): void {
    const owners = [...this.open.keys()];
    this.lastOwner = owners.at(-1);
    this.stats.lastError = this.lastOwner === undefined ? undefined : this.open.get(this.lastOwner)!.at(-1);
  }
}
