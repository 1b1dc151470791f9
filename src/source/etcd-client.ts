import fs from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import { NoopPolicy } from 'cockatiel';
import { UserError } from '../errors.js';
import type { Config } from '../config/schema.js';

export type EtcdConfig = Config['etcd'];

/**
 * One etcd3 client, tuned so that confsync — not the library — owns retries:
 * - etcd3's default circuit breaker keeps a host "open" 5 s after 3 failures and
 *   its global policy retries 3 times; our loops back off themselves, so both
 *   are no-ops here (DEPENDENCIES.md: default reconnect is ~15 s).
 * - gRPC's own channel reconnect backoff starts at 1 s and grows to 120 s; cap
 *   it at 1 s so a returning etcd is seen within about a second.
 * - the receive limit is raised past gRPC's 4 MiB; lists are paged as well.
 */
export function createEtcdClient(cfg: EtcdConfig): Etcd3 {
  if (cfg.endpoints.some((e) => e.startsWith('https:'))) silenceIpServernameWarning();
  const options: IOptions = {
    hosts: cfg.endpoints,
    dialTimeout: 3000,
    grpcOptions: {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.min_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
    },
    faultHandling: {
      host: () => new NoopPolicy(),
      global: new NoopPolicy(),
    },
  };
  if (cfg.tls) {
    options.credentials = {
      rootCertificate: readFile(cfg.tls.ca, 'etcd.tls.ca'),
      privateKey: cfg.tls.key ? readFile(cfg.tls.key, 'etcd.tls.key') : undefined,
      certChain: cfg.tls.cert ? readFile(cfg.tls.cert, 'etcd.tls.cert') : undefined,
    };
  }
  if (cfg.auth) {
    options.auth = { username: cfg.auth.username, password: readFile(cfg.auth.passwordFile, 'etcd.auth.passwordFile').toString('utf8').trim() };
  }
  return new Etcd3(options);
}

function readFile(file: string | undefined, field: string): Buffer {
  if (!file) throw new UserError(`field ${field}: a file path is required`);
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UserError(`field ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
}

/** The exclusive end of a prefix range: the prefix with its last byte incremented. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * The confirming read for one prefix range (etcd-watch.ts (d)), as three range
 * requests for one read-only transaction: its count at `at` (the head when
 * undefined), its count at `since`, and one key at `at` modified after `since`.
 */
export function unchangedSinceRanges(range: { key: Buffer; end: Buffer }, since: number, at?: number): object[] {
  const r = { key: range.key, range_end: range.end, ...(at === undefined ? {} : { revision: at }) };
  return [
    { ...r, count_only: true },
    { ...r, count_only: true, revision: since },
    { ...r, keys_only: true, limit: 1, min_mod_revision: since + 1 },
  ];
}

/**
 * The answer to those three: the prefix holds exactly what it held at `since`
 * (every key now existed then unchanged, and there are as many; a delete shows in
 * the count, a delete and re-create in the mod revision).
 */
export function unchangedSince([now, then, newer]: { count: string; kvs: unknown[] }[]): boolean {
  return newer!.kvs.length === 0 && now!.count === then!.count;
}

/**
 * @grpc/grpc-js passes the endpoint's host as the TLS servername even when it is an
 * IP address (https://10.0.0.5:2379, the usual etcd endpoint), and Node then prints
 * "[DEP0123] DeprecationWarning: Setting the TLS ServerName to an IP address…" to
 * every CLI user and into the daemon's stderr. The warning is about SNI only: the
 * certificate is still checked against the IP's SAN. Drop exactly that warning
 * (by its code), nothing else.
 */
let silenced = false;
function silenceIpServernameWarning(): void {
  if (silenced) return;
  silenced = true;
  const emit = process.emitWarning;
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
    const opt = rest[0];
    const code = typeof opt === 'object' && opt !== null ? (opt as { code?: unknown }).code : rest[1];
    if (code === 'DEP0123' || (warning instanceof Error && (warning as NodeJS.ErrnoException).code === 'DEP0123')) return;
    return (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  } as typeof process.emitWarning;
}
