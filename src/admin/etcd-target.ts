/**
 * Which etcd a CLI run talks to, where that choice came from, and what an operator
 * reads when it cannot be reached: the endpoint, its origin (--endpoints,
 * $CONFSYNC_ENDPOINTS, --config or the default) and what to try — never gRPC's own
 * text ("14 UNAVAILABLE: … Resolution note: ").
 */
import { GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { printable } from '../keyspace.js';
import { isRefusal } from '../source/etcd-errors.js';

/** Where the endpoints came from, as commander reports an option's source. */
export type EndpointsSource = 'cli' | 'env' | 'config' | 'default';

export interface EtcdTarget {
  endpoints: string[];
  /** Human text: `--endpoints`, `$CONFSYNC_ENDPOINTS`, `etcd.endpoints in FILE`, or the default. */
  origin: string;
}

export function describeOrigin(source: EndpointsSource, configFile?: string): string {
  if (source === 'cli') return '--endpoints';
  if (source === 'env') return '$CONFSYNC_ENDPOINTS';
  if (source === 'config' && configFile) return `etcd.endpoints in ${configFile}`;
  return 'the default; none of --endpoints, $CONFSYNC_ENDPOINTS, --config given';
}

// A CLI run dials one etcd; the entry point's error handler asks about it here.
let current: EtcdTarget | undefined;

export function noteTarget(target: EtcdTarget): void {
  current = target;
}

const UNAVAILABLE = 14;
const DEADLINE_EXCEEDED = 4;

/** gRPC's last socket error in its text, e.g. `connect ECONNREFUSED 127.0.0.1:1`. */
const REASONS: [RegExp, string][] = [
  [/\bECONNREFUSED\b/, 'connection refused'],
  [/\b(ENOTFOUND|EAI_AGAIN)\b/, 'host name not found'],
  [/\b(EHOSTUNREACH|ENETUNREACH)\b/, 'no route to host'],
  [/\b(ETIMEDOUT|deadline)\b/i, 'timed out'],
  [/\bECONNRESET\b/, 'connection reset'],
  [/\b(TLS|SSL|certificate)\b/i, 'TLS handshake failed'],
];

/**
 * One actionable line for an etcd error seen by a CLI verb, or undefined when the
 * error is not about reaching etcd (the caller prints it as it is).
 */
export function explainEtcdError(err: unknown): string | undefined {
  if (!current) return undefined;
  const where = `etcd at ${current.endpoints.map(printable).join(', ')} (from ${current.origin})`;
  const code = (err as { code?: unknown } | undefined)?.code;
  const text = String((err as Error | undefined)?.message ?? err);
  if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError || code === UNAVAILABLE || code === DEADLINE_EXCEEDED) {
    const reason = REASONS.find(([re]) => re.test(text))?.[1] ?? 'no connection';
    const tls = reason === 'TLS handshake failed' || current.endpoints.some((e) => e.startsWith('https:'));
    return (
      `cannot reach ${where}: ${reason}. Is etcd running and listening there` +
      (tls ? ' (https:// needs etcd.tls.ca from --config; a plain etcd needs http://)' : '') +
      '? Set another address with --endpoints, $CONFSYNC_ENDPOINTS or etcd.endpoints in --config'
    );
  }
  if (isRefusal(err)) {
    return `${where} refused the request (${printable(text.split('\n')[0]!.slice(0, 200))}); check etcd.auth in --config and the user's role (scripts/etcd-rbac.sh)`;
  }
  return undefined;
}
