/**
 * `confsync console`: the read-only fleet console (src/console/). Flags and the
 * listen policy only: loopback by default; any other address needs a bearer
 * token (--token-file) and TLS (--tls-cert/--tls-key), or --insecure for plain HTTP.
 */
import type { Command } from 'commander';
import fs from 'node:fs';
import { isIP } from 'node:net';
import { Feed } from '../console/feed.js';
import { startConsoleServer } from '../console/server.js';
import { UserError } from '../errors.js';
import { createLogger } from '../log.js';
import { connect, connectionOptions, intArg, untilSignal, type ConnectionFlags } from './common.js';

interface ConsoleFlags extends ConnectionFlags {
  listen: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  insecure?: boolean;
  staleSeconds: number;
}

/** `host:port` or `[v6]:port`. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]{2,45})\]:(\d{1,5})$/.exec(listen) ?? /^([^:[\]]{1,253}):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UserError(`--listen "${listen}": must be host:port or [ipv6]:port`);
  return { host: m[1]!, port };
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

function readSecretFile(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UserError(`${flag} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
}

export function registerConsole(program: Command): void {
  connectionOptions(program.command('console').description('read-only web console: fleet convergence matrix, live event stream, object view'))
    .option('--listen <host:port>', 'address to serve on (non-loopback needs --token-file and TLS or --insecure)', '127.0.0.1:8484')
    .option('--token-file <file>', 'bearer token file (required off loopback); the page asks for it once at /login')
    .option('--tls-cert <file>', 'TLS certificate (PEM), with --tls-key')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--insecure', 'allow plain HTTP on a non-loopback address (the token then crosses the network in clear)')
    .option('--stale-seconds <n>', 'a status older than this shows as stale', intArg(1, 86_400), 15)
    .action(async (flags: ConsoleFlags) => {
      const { host, port } = parseListen(flags.listen);
      if (!!flags.tlsCert !== !!flags.tlsKey) throw new UserError('--tls-cert and --tls-key go together');
      if (!isLoopback(host)) {
        if (!flags.tokenFile) throw new UserError(`--listen ${flags.listen} is not a loopback address: give --token-file FILE (a bearer token), and --tls-cert/--tls-key or --insecure`);
        if (!flags.tlsCert && !flags.insecure) throw new UserError(`--listen ${flags.listen} is not a loopback address: give --tls-cert/--tls-key, or --insecure to serve the token over plain HTTP`);
      }
      let token: string | undefined;
      if (flags.tokenFile) {
        token = readSecretFile(flags.tokenFile, '--token-file').toString('utf8').trim();
        if (token.length < 16) throw new UserError(`--token-file ${flags.tokenFile}: the token must be at least 16 characters (e.g. openssl rand -hex 32)`);
      }
      const tls = flags.tlsCert ? { cert: readSecretFile(flags.tlsCert, '--tls-cert'), key: readSecretFile(flags.tlsKey!, '--tls-key') } : undefined;
      const { ks, client } = connect(flags);
      const logger = createLogger('info', process.stderr);
      const feed = new Feed(client, ks, logger, flags.staleSeconds);
      try {
        await feed.start();
        const server = await startConsoleServer({ host, port, token, tls, client, ks, feed, logger });
        process.stderr.write(`confsync console: ${server.url} (read-only; prefix ${ks.prefix}; Ctrl-C stops it)\n`);
        await untilSignal();
        await server.close();
      } finally {
        feed.close();
        client.close();
      }
    });
}
