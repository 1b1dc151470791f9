/**
 * One error module. `UserError` is a mistake an operator can fix (bad flag, bad
 * config field, bad key): the CLI prints its message on one line, no stack.
 * `InvalidInput` is bad data found in etcd: reported by path, never fatal.
 */

export class UserError extends Error {
  override name = 'UserError';
}

/** Bad data under the prefix. `path` is the etcd key; the message never holds a value. */
export class InvalidInput extends Error {
  override name = 'InvalidInput';
  constructor(
    readonly path: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${path}: ${reason}`, options);
  }
}

/** A message safe to show: the error's own message, never its cause's details. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
