/**
 * The console for tests and benches: `confsync console` as an operator starts it (a
 * child process; the URL read from its first line), and Debian's chromium driven by
 * playwright-core (no browser download), with the flags this machine needs
 * (a closed network: no background requests, no QUIC, no first-run work).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chromium, type Browser, type Page } from 'playwright-core';
import { MAIN, until } from './daemon.js';

export const CHROMIUM = '/usr/bin/chromium';

/** The console as an operator starts it; resolves with its URL once it listens. */
export async function startConsole(args: string[], timeoutMs = 15_000): Promise<{ url: string; proc: ChildProcess; log: () => string; stop(): Promise<number | null> }> {
  const proc = spawn(process.execPath, [MAIN, 'console', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const url = await until(() => /confsync console: (\S+)/.exec(log)?.[1] ?? (proc.exitCode !== null && Promise.reject(new Error(`console exited: ${log}`))), 'console listening', timeoutMs);
  return { url, proc, log: () => log, stop: async () => (proc.kill('SIGTERM'), exited) };
}

/** Debian's chromium, headless; playwright gives each launch a fresh, empty profile dir (it refuses --user-data-dir). */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** What a page did that a test of untrusted text forbids: dialogs opened (each dismissed) and script errors. */
export function watchPage(page: Page): { dialogs: string[]; errors: string[] } {
  const seen = { dialogs: [] as string[], errors: [] as string[] };
  page.on('dialog', (d) => {
    seen.dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('pageerror', (e) => seen.errors.push(e.message));
  return seen;
}
