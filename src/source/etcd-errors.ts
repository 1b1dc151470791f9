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
  GRPCUnauthenticatedError,
} from 'etcd3';

/** gRPC status codes (grpc/doc/statuscodes.md). */
const PERMISSION_DENIED = 7;
const UNAUTHENTICATED = 16;

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
