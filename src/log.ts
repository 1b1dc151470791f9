import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Paths that may carry secret material. Nothing in confsync logs a value on
 * purpose; redaction is the second line of defence (Renovate's habit).
 */
const REDACT = ['value', '*.value', 'data', '*.data', 'plaintext', '*.plaintext', 'secret', '*.secret', 'password', '*.password'];

/** `json`: one JSON object a line (for journald, kubectl logs, jq); `pretty`: coloured lines; `auto`: pretty on a terminal. */
export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * The daemon's logger. On a terminal (format `auto`) lines go through pino's
 * own pretty transport (pino-pretty, in a worker thread: formatting never
 * blocks the loop); anywhere else, or with a `destination`, JSON lines.
 */
export function createLogger(level = 'info', destination?: NodeJS.WritableStream, format: LogFormat = 'auto'): Logger {
  const options = {
    level,
    base: { app: 'confsync' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(options, destination as any);
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  if (!pretty) return pino(options);
  return pino({
    ...options,
    transport: {
      target: 'pino-pretty',
      options: { colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,app', singleLine: true },
    },
  });
}
