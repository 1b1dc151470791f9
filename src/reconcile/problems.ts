/**
 * Bad input, reported once: each distinct (path, reason) is logged and counted
 * the first time it is seen, so a resync does not repeat it. The memory of what
 * was reported is bounded — keys come from anyone who can write etcd, and a
 * writer churning bad keys must not grow the daemon without limit; past the
 * bound it starts over (at worst a problem is logged again).
 */
import type { Problem } from '../desired/build.js';
import type { Logger } from '../log.js';
import type { ProblemCounter, ReconcileEvent, ReconcileStats } from './events.js';

const MAX_REMEMBERED = 10_000;

export class ProblemReporter {
  private readonly reported = new Set<string>();

  constructor(
    private readonly stats: ReconcileStats,
    private readonly logger: Logger,
    private readonly emit: (e: ReconcileEvent) => void,
  ) {}

  report(p: Problem, counter: ProblemCounter = p.unopened ? 'decryptFailures' : 'invalidInputs'): void {
    const tag = `${p.path}\0${p.reason}`;
    this.stats.lastError = p;
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
}
