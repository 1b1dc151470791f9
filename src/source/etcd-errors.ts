/**
 * What an etcd error means for the watch loop, decided by error class and gRPC
 * status code (etcd3 casts etcd's own errors to classes; a raw @grpc/grpc-js
 * error carries `code`), never by matching message text.
 */
import {
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  EtcdUserNotFoundError,
  GRPCOutOfRangeError,
  GRPCUnauthenticatedError,
} from 'etcd3';

/** gRPC status codes (grpc/doc/statuscodes.md). */
const PERMISSION_DENIED = 7;
const UNAUTHENTICATED = 16;
const OUT_OF_RANGE = 11;

/** A read at a revision etcd no longer has (compacted) — or does not have yet (future). */
export function isOutOfRange(err: unknown): boolean {
  return err instanceof GRPCOutOfRangeError || (err as { code?: unknown } | undefined)?.code === OUT_OF_RANGE;
}

/** etcd refused our credentials or permissions: an operator must act; an outage needs no one. */
export function isRefusal(err: unknown): boolean {
  if (
    err instanceof EtcdPermissionDeniedError ||
    err instanceof EtcdAuthenticationFailedError ||
    err instanceof EtcdInvalidAuthTokenError ||
    err instanceof EtcdUserNotFoundError ||
    err instanceof GRPCUnauthenticatedError
  ) {
    return true;
  }
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === PERMISSION_DENIED || code === UNAUTHENTICATED;
}
