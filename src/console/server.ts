/**
 * The console's HTTP side (node:http, no framework: seven routes). Read-only.
 *
 *   GET  /                      the page (web/index.html) with its first screenful of the
 *                               matrix inside, as a JSON data block (page.ts)
 *   GET  /assets/<file>         the page's script and style, preact, preact/hooks, htm
 *   GET  /api/stream            server-sent events: `hello` (matrix, recent events), then
 *                               `events`, `matrix`, `state` as the feed (feed.ts) sends them
 *   GET  /api/object?kind=&namespace=&name=   the object view (objects.ts)
 *   GET  /login, POST /login    only with a token: a form that trades the token for a cookie
 *
 * Every response carries a strict Content-Security-Policy (no inline script but the
 * import map, allowed by its hash; no inline style, no eval, no framing) and nosniff.
 * The page's data block is not script to the browser (never executed), so the policy
 * stays as it is; page.ts escapes it so that nothing in it can end the element.
 * With a token (non-loopback), every route but /login and its style needs
 * `Authorization: Bearer <token>` or the session cookie /login set; comparisons are
 * constant-time. Without one (loopback), the Host header must name the loopback
 * listener: a page elsewhere cannot rebind a name of its own to 127.0.0.1 and read.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { UserError } from '../errors.js';
import { printable, type Keyspace } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { Feed, FeedMessage } from './feed.js';
import { readObject, refFrom } from './objects.js';
import { firstScreen, pageParts, renderPage } from './page.js';

export interface ConsoleServerOptions {
  host: string;
  port: number;
  /** Bearer token (required off loopback; the CLI enforces it). */
  token?: string;
  tls?: { cert: Buffer; key: Buffer };
  client: Etcd3;
  ks: Keyspace;
  feed: Feed;
  logger: Logger;
}

interface Asset {
  body: Buffer;
  type: string;
}

/** A client this far behind on the stream is dropped (its EventSource reconnects and starts afresh). */
const SSE_MAX_BUFFER = 8 * 1024 * 1024;
/** Open event streams at most (each costs a copy of every batch); more get 503. */
const SSE_MAX_CLIENTS = 64;
const SESSION_COOKIE = 'confsync_console';
const SESSIONS_MAX = 1000;

const WEB = new URL('./web/', import.meta.url);
const TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', mjs: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', html: 'text/html; charset=utf-8' };

function loadAssets(): { assets: Map<string, Asset>; index: { before: Buffer; after: Buffer }; login: Buffer; importMapHash: string } {
  const read = (url: URL | string) => fs.readFileSync(typeof url === 'string' ? url : fileURLToPath(url));
  const assets = new Map<string, Asset>();
  for (const file of ['app.js', 'store.js', 'events.js', 'matrix.js', 'object.js', 'style.css']) {
    assets.set(file, { body: read(new URL(file, WEB)), type: TYPES[file.split('.').pop()!]! });
  }
  // The libraries' ES module builds, straight from node_modules (no bundler).
  const lib = (spec: string) => read(fileURLToPath(import.meta.resolve(spec)));
  assets.set('preact.mjs', { body: lib('preact'), type: TYPES.mjs! });
  assets.set('hooks.mjs', { body: lib('preact/hooks'), type: TYPES.mjs! });
  assets.set('htm.mjs', { body: lib('htm'), type: TYPES.mjs! });
  const index = read(new URL('index.html', WEB));
  const map = /<script type="importmap">([\s\S]*?)<\/script>/.exec(index.toString());
  if (!map) throw new Error('console: web/index.html has no import map');
  return { assets, index: pageParts(index), login: read(new URL('login.html', WEB)), importMapHash: createHash('sha256').update(map[1]!).digest('base64') };
}

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest();
const sameSecret = (a: string, b: Buffer) => timingSafeEqual(sha(a), b);

export async function startConsoleServer(o: ConsoleServerOptions): Promise<{ url: string; close(): Promise<void> }> {
  const { assets, index, login, importMapHash } = loadAssets();
  const csp = [
    "default-src 'self'", `script-src 'self' 'sha256-${importMapHash}'`, "style-src 'self'", "img-src 'self'", "connect-src 'self'",
    "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'",
  ].join('; ');
  const tokenHash = o.token ? sha(o.token) : undefined;
  const sessions = new Set<string>();
  const streams = new Set<http.ServerResponse>();

  const headers = (type: string, extra: Record<string, string> = {}) => ({
    'Content-Type': type,
    'Content-Security-Policy': csp,
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Cache-Control': 'no-store',
    ...extra,
  });
  const send = (res: http.ServerResponse, status: number, type: string, body: string | Buffer, extra?: Record<string, string>) => {
    res.writeHead(status, headers(type, extra));
    res.end(body);
  };
  const json = (res: http.ServerResponse, status: number, value: unknown) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));

  const authorized = (req: http.IncomingMessage): boolean => {
    if (!tokenHash) return true;
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Bearer ') && sameSecret(auth.slice(7).trim(), tokenHash)) return true;
    for (const part of (req.headers.cookie ?? '').split(';')) {
      const [name, value] = part.trim().split('=', 2);
      if (name === SESSION_COOKIE && value && [...sessions].some((s) => sameSecret(value, sha(s)))) return true;
    }
    return false;
  };

  let allowedHosts = new Set<string>();
  const hostOk = (req: http.IncomingMessage) => tokenHash !== undefined || allowedHosts.has((req.headers.host ?? '').toLowerCase());

  /** Where things stand: the page's first screen (cut to its first rows) and the stream's hello. */
  const current = () => ({ prefix: o.ks.prefix, state: o.feed.state, matrix: o.feed.model.matrix(Date.now()), objects: o.feed.model.objectCount });

  const stream = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (streams.size >= SSE_MAX_CLIENTS) return json(res, 503, { error: `${SSE_MAX_CLIENTS} pages are open already; close one` });
    res.writeHead(200, headers('text/event-stream; charset=utf-8', { Connection: 'keep-alive' }));
    const write = (event: string, data: unknown) => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      if (res.writableLength > SSE_MAX_BUFFER) {
        o.logger.warn({ buffered: res.writableLength }, 'console: a page fell too far behind the event stream; dropped it (it reconnects and starts afresh)');
        res.destroy();
      }
    };
    res.write('retry: 1000\n\n');
    write('hello', { ...current(), recent: o.feed.recent });
    const off = o.feed.subscribe((m: FeedMessage) => write(m.type, m));
    const ping = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    streams.add(res);
    const done = () => {
      off();
      clearInterval(ping);
      streams.delete(res);
    };
    req.on('close', done);
    res.on('error', done);
  };

  const postLogin = (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
      if (body.length > 4096) req.destroy();
    });
    req.on('end', () => {
      const token = new URLSearchParams(body).get('token') ?? '';
      if (!tokenHash || !sameSecret(token.trim(), tokenHash)) return send(res, 401, 'text/plain; charset=utf-8', 'wrong token\n');
      const session = randomBytes(32).toString('hex');
      if (sessions.size >= SESSIONS_MAX) sessions.delete(sessions.values().next().value!);
      sessions.add(session);
      const secure = o.tls ? '; Secure' : '';
      send(res, 303, 'text/plain; charset=utf-8', '', { Location: '/', 'Set-Cookie': `${SESSION_COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/${secure}` });
    });
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://console');
    if (!hostOk(req)) return send(res, 421, 'text/plain; charset=utf-8', 'unexpected Host header: open the console by its loopback address\n');
    if (url.pathname === '/login' && tokenHash) {
      if (req.method === 'POST') return postLogin(req, res);
      return send(res, 200, TYPES.html!, login);
    }
    if (url.pathname === '/assets/style.css' && req.method === 'GET') return send(res, 200, assets.get('style.css')!.type, assets.get('style.css')!.body);
    if (!authorized(req)) {
      if (url.pathname === '/' && req.method === 'GET') return send(res, 303, 'text/plain; charset=utf-8', '', { Location: '/login' });
      return json(res, 401, { error: 'a bearer token is required (Authorization: Bearer …, or sign in at /login)' });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'the console is read-only' });
    if (url.pathname === '/') return send(res, 200, TYPES.html!, renderPage(index, firstScreen(current())));
    if (url.pathname.startsWith('/assets/')) {
      const a = assets.get(url.pathname.slice('/assets/'.length));
      return a ? send(res, 200, a.type, a.body) : json(res, 404, { error: 'no such asset' });
    }
    if (url.pathname === '/api/stream') return stream(req, res);
    if (url.pathname === '/api/object') {
      try {
        return json(res, 200, await readObject(o.client, o.ks, o.feed.model, refFrom(url.searchParams)));
      } catch (err) {
        if (err instanceof UserError) return json(res, 400, { error: err.message });
        o.logger.warn({ err: (err as Error).message }, 'console: object view failed (etcd); the page shows the error');
        return json(res, 502, { error: `reading etcd failed: ${printable((err as Error).message.split('\n')[0]!.slice(0, 200))}` });
      }
    }
    return json(res, 404, { error: 'not found' });
  };

  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(req, res).catch((err: Error) => {
      o.logger.error({ err: err.message }, 'console: request failed');
      if (!res.headersSent) json(res, 500, { error: 'internal error (logged)' });
      else res.destroy();
    });
  };
  const server = o.tls ? https.createServer({ cert: o.tls.cert, key: o.tls.key }, listener) : http.createServer(listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new UserError(`--listen ${o.host}:${o.port}: cannot listen (${err.code ?? err.message})`)));
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  allowedHosts = new Set([`${hostPart}:${port}`, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`].map((h) => h.toLowerCase()));
  return {
    url: `${o.tls ? 'https' : 'http'}://${hostPart}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of streams) s.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
