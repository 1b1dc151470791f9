import { stringify as toYaml } from 'yaml';
import { matchesGlob } from '../glob.js';
import { ObjectsDrop } from './data.js';

/** A value as text (nothing for null/undefined), as Liquid prints it. */
export function text(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

/** Standard base64 (padding optional, whitespace ignored). A linear character check: no backtracking. */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A filter's `this` in liquidjs: the render's context, with its allocation budget. */
type FilterThis = { context?: { memoryLimit?: { use(n: number): void } } } | undefined;

/** What a filter builds counts against the render's allocation budget (liquidjs' own filters do the same). */
function charged<T extends string | unknown[]>(self: FilterThis, out: T): T {
  self?.context?.memoryLimit?.use(out.length);
  return out;
}

/** The filters confd/consul-template users reach for. Each throws a message without the value. */
export const FILTERS: Record<string, (this: FilterThis, v: unknown, ...args: unknown[]) => unknown> = {
  match(v, glob) {
    if (typeof glob !== 'string') throw new Error('match: needs a glob, e.g. match: "default/web-*"');
    if (v instanceof ObjectsDrop) return charged(this, v.match(glob));
    if (Array.isArray(v)) return charged(this, v.filter((o) => o && typeof o.ref === 'string' && matchesGlob(o.ref, glob)));
    throw new Error('match: use it on configmaps or secrets (or a list of their objects)');
  },
  base64(v) {
    return charged(this, Buffer.from(text(v), 'utf8').toString('base64'));
  },
  base64_decode(v) {
    const s = text(v).replace(/\s/g, '');
    if (s.length % 4 === 1 || !BASE64.test(s)) throw new Error('base64_decode: the input is not base64');
    return charged(this, Buffer.from(s, 'base64').toString('utf8'));
  },
  yaml(v) {
    return charged(this, toYaml(v instanceof ObjectsDrop ? v.valueOf() : v ?? null));
  },
  /** A double-quoted value for .env files (docker, dotenv, systemd EnvironmentFile): \ " $ ` escaped, newlines as \n. */
  env_quote(v) {
    return charged(this, `"${text(v).replace(/[\\"$`]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`);
  },
  /** One POSIX shell word: single-quoted, a ' inside as '\'' . */
  sh_quote(v) {
    return charged(this, `'${text(v).split("'").join("'\\''")}'`);
  },
};
