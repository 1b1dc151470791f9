/**
 * One error module (etcd3's habit: the retry loop reads a mark, not a message).
 *  - `UserError`: the command as given cannot succeed (bad flag, argument, config,
 *    identity or recipients file, a key that does not exist): the CLI prints its
 *    message on one line, no stack, and exits 2.
 *  - `OperationFailed`: the command was right but what it met stopped it (etcd
 *    unreachable, a concurrent change, bad data found): one line, no stack, exit 1.
 *  - `InvalidInput`: bad data found in etcd or asked of a sink (a key that cannot be
 *    a file name, an object over a limit). Reported by path, never fatal, and NOT
 *    retried: the same input fails the same way until someone changes it.
 *  - anything else thrown by a sink is taken as transient and retried with backoff.
 */

export class UserError extends Error {
  override name = 'UserError';
}

export class OperationFailed extends Error {
  override name = 'OperationFailed';
}

/** Bad data under the prefix. `path` is the etcd key or object id; the message never holds a value. */
export class InvalidInput extends Error {
  override name = 'InvalidInput';
  readonly retryable = false;
  constructor(
    readonly path: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${path}: ${reason}`, options);
  }
}

/** Will the same call succeed later without anyone changing the input? */
export function isRetryable(err: unknown): boolean {
  return !(err instanceof InvalidInput || err instanceof UserError);
}
