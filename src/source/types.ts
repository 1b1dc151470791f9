/**
 * What a Source hands the daemon. A Source owns its connection and its resume
 * revision; the daemon only consumes events, in etcd revision order.
 */

/** One key as etcd holds it. Values are raw bytes: config may be binary. */
export interface Kv {
  key: string;
  value: Buffer;
  modRevision: number;
}

export type Change =
  | { type: 'put'; kv: Kv }
  | { type: 'delete'; key: string; modRevision: number };

/** Connection states, as a union rather than booleans (client-node's ListWatch habit). */
/** `offline`: etcd did not answer at start; the daemon serves from its local snapshot and keeps trying. */
export type ConnectionState = 'connecting' | 'listing' | 'watching' | 'backoff' | 'offline' | 'closed';

export type SourceEvent =
  /**
   * The complete state of the prefix at `revision`: any key not in `kvs` is gone.
   * `offline`: from the local snapshot, not (yet) confirmed by etcd — serve it,
   * prune nothing; a snapshot from etcd follows once it answers.
   * `resumed`: the local snapshot brought up to `revision` by a watch catch-up
   * (etcd still held its revision): as complete as a list, without one.
   * `rebase`: etcd's history restarted below revisions handed on before (etcd
   * restored from an older backup): revisions start again from this one.
   */
  | { type: 'snapshot'; revision: number; kvs: Kv[]; offline?: true; resumed?: true; rebase?: true }
  /** Changes that happened after the previous event, ending at `revision`, in order. */
  | { type: 'changes'; revision: number; changes: Change[]; head: number }
  /**
   * Changes etcd committed that arrived on a watcher and wait (b) until the other
   * watchers are known past them. A hint for work that shows nothing (a sink may
   * prepare an update it then only has to swap in), never state: they come again
   * in a `changes` event, or never, if the stream fails first (the resumed watch
   * delivers them again).
   */
  | { type: 'held'; changes: Change[] }
  /** etcd confirmed nothing under the prefix changed up to `revision`. */
  | { type: 'progress'; revision: number; head: number }
  | { type: 'state'; state: ConnectionState; detail?: string };

/**
 * Where keys come from. `start` lists, then watches from list revision + 1 and
 * keeps doing so across reconnects and compactions until `close`.
 * Errors never escape: a Source reports them as `state` events and retries.
 */
export interface Source {
  start(onEvent: (event: SourceEvent) => void): void;
  close(): Promise<void>;
}
