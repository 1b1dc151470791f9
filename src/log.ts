import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Paths that may carry secret material. Nothing in confsync logs a value on
 * purpose; redaction is the second line of defence (Renovate's habit).
 */
const REDACT = ['value', '*.value', 'data', '*.data', 'plaintext', '*.plaintext', 'secret', '*.secret', 'password', '*.password'];

export function createLogger(level = 'info', destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { app: 'confsync' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination as any) : pino(options);
}
