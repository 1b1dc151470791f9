/**
 * One place for "how far along are we": etcd's head as the source last saw it,
 * the revision whose changes are in the key store, the revision every sink has
 * been handed, the connection state and when etcd last answered. The reconciler
 * writes it; status, metrics and readiness only read it.
 *
 * Revisions only ever move forward here: a lagging member's older header must
 * never make a log line, a status key or a resume point look like it went back.
 */
import { performance } from 'node:perf_hooks';
import type { ConnectionState, SourceEvent } from '../source/types.js';

export class Progress {
  /** Highest revision etcd reported having (a header or an event). */
  head = 0;
  /** Highest revision whose changes are in the key store. */
  received = 0;
  /** Highest revision whose changes every sink has been handed. */
  applied = 0;
  /** Highest revision of a snapshot or of changes received (not of a bare progress answer): the newest news of the watched keys. */
  changed = 0;
  /** True once the first complete snapshot has been reconciled. */
  synced = false;
  state: ConnectionState = 'connecting';
  /** The first full sync: objects in the first snapshot, how many are reconciled, since when (performance.now()). */
  firstSync = { total: 0, done: 0, startedAt: 0 };
  /** Served from the local snapshot because etcd did not answer at start: since when, and until when (ISO). */
  offline?: { since: string; until?: string; revision: number };
  /** performance.now() of the last answer from etcd (snapshot, changes or progress). */
  lastHeardAt = performance.now();
  /**
   * Each head revision etcd reported that is not applied yet, with when it was
   * first seen (oldest first). Under a steady stream of writes `applied` trails
   * `head` all the time yet keeps up; what matters is how long the OLDEST
   * unapplied revision has waited. Bounded: past the bound new heads are not
   * recorded, and once the recorded ones are applied the current head is.
   */
  private readonly unapplied: { revision: number; seenAt: number }[] = [];

  constructor(private readonly now: () => number = () => performance.now()) {
    this.lastHeardAt = now();
  }

  /** A source event arrived (the reconciler calls this before acting on it). */
  noteEvent(event: Exclude<SourceEvent, { type: 'held' }>): void {
    if (event.type === 'state') {
      this.state = event.state;
      if (event.state === 'offline') this.offline = { since: new Date().toISOString(), revision: 0 };
      return;
    }
    if (this.offline && !this.offline.until && !(event.type === 'snapshot' && event.offline)) this.offline.until = new Date().toISOString();
    if (event.type === 'snapshot' && event.offline && this.offline) this.offline.revision = event.revision;
    if (event.type === 'snapshot' && event.rebase) {
      // etcd's history restarted below ours (restored from an older backup): so do we.
      this.head = this.received = this.applied = this.changed = 0;
      this.unapplied.length = 0;
    }
    this.lastHeardAt = this.now();
    if (event.type !== 'progress') this.changed = Math.max(this.changed, event.revision);
    const head = event.type === 'snapshot' ? event.revision : event.head;
    const newHead = Math.max(head, event.revision);
    if (newHead > this.head && this.unapplied.length < 10_000) this.unapplied.push({ revision: newHead, seenAt: this.now() });
    this.head = Math.max(this.head, newHead);
    this.received = Math.max(this.received, event.revision);
    this.checkBehind();
  }

  /** Every sink has been handed the changes up to `revision`. */
  markApplied(revision: number): void {
    this.applied = Math.max(this.applied, Math.min(revision, this.received));
    this.checkBehind();
  }

  /** Revisions etcd has that the sinks do not have yet. */
  lag(): number {
    return Math.max(0, this.head - this.applied);
  }

  /**
   * Why the daemon is not ready, or undefined. Not ready until the first full
   * sync; then whenever etcd has gone quiet, or applied state has stayed behind
   * what etcd committed, for longer than `stallSeconds` — whatever the cause
   * (a hung member, a proxy that never answers progress requests, a stuck sink).
   */
  notReady(stallSeconds: number): string | undefined {
    if (this.offline && !this.offline.until) return `serving from the local snapshot (revision ${this.offline.revision}) since ${this.offline.since}: etcd not reachable`;
    if (!this.synced) return 'first full sync not done';
    const now = this.now();
    const quiet = (now - this.lastHeardAt) / 1000;
    if (quiet > stallSeconds) return `no progress from the etcd watch for ${Math.round(quiet)} s (state: ${this.state})`;
    const oldest = this.unapplied[0];
    if (oldest && (now - oldest.seenAt) / 1000 > stallSeconds) {
      return `applied revision ${this.applied} behind etcd's ${oldest.revision} for ${Math.round((now - oldest.seenAt) / 1000)} s (head ${this.head})`;
    }
    return undefined;
  }

  private checkBehind(): void {
    let n = 0;
    while (n < this.unapplied.length && this.unapplied[n]!.revision <= this.applied) n++;
    if (n > 0) this.unapplied.splice(0, n);
    if (this.unapplied.length === 0 && this.head > this.applied) this.unapplied.push({ revision: this.head, seenAt: this.now() });
  }
}
