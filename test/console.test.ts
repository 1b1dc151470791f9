/**
 * `confsync console` in a real browser: one real etcd, two real daemons (cluster
 * eu, nodes n1 and n2, files sink), the console as the CLI runs it, and Debian's
 * chromium driven by playwright-core. Checked as an operator uses it: the matrix
 * shows both nodes in sync and moves to a new revision after a put; the put shows in
 * the stream; pause holds new events and resume shows them; the namespace filter
 * hides the others; a value with a script tag renders as text and runs nothing; a
 * node stopped with SIGTERM turns "gone"; the object view shows scopes, the winning
 * override and history; no response body holds a secret value or an envelope; every
 * response has the CSP. How fast: the delays are printed, bench/console.ts measures.
 * The run takes the screenshots docs/console.md shows (into docs/console/ with CONFSYNC_SCREENSHOTS=docs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import type { Page } from 'playwright-core';
import { seal } from '../src/envelope/envelope.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { DaemonProcess, MAIN, until } from './harness/daemon.js';
import { startEtcd } from './harness/etcd.js';
import { CHROMIUM, launchChromium, startConsole, watchPage } from './harness/console.js';

const P = '/confsync';
// docs/console/*.png when CONFSYNC_SCREENSHOTS=docs (to refresh the committed ones); else a temp dir,
// so that `npm test` leaves the work tree clean. The screenshots are taken either way.
const SHOTS = process.env.CONFSYNC_SCREENSHOTS === 'docs' ? fileURLToPath(new URL('../../docs/console/', import.meta.url)) : fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-shots-'));
const skip = fs.existsSync(CHROMIUM) ? false : `chromium not found at ${CHROMIUM}: browser tests skipped (scripts/setup.sh --test installs Debian's chromium)`;

test('console: matrix, stream, pause, filter, object view, XSS as text, stopped node, no secret in any response', { skip }, async () => {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-key-'));
  const idFile = path.join(keyDir, 'eu.key');
  const eu = generateIdentity();
  await writeIdentityFile(idFile, eu);
  const euR = recipientOf(eu.publicKey);
  const cfg = (node: string) => ({ cluster: 'eu', node, identity: idFile, etcd: { endpoints: [etcd.endpoint] }, status: { intervalSeconds: 0.2 } });
  const daemons = [new DaemonProcess(cfg('n1')), new DaemonProcess(cfg('n2'))];
  // Every secret this test knows: no response may hold one of them.
  const secret = 'correct-horse-battery-staple-4217';
  const handWritten = 'plaintext-by-hand-7c1e';
  const envelope = await seal(Buffer.from(secret), 'global/secrets/default/db/password', [euR]);
  const xss = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">';
  let console_: Awaited<ReturnType<typeof startConsole>> | undefined;
  let chrome: Awaited<ReturnType<typeof launchChromium>> | undefined;
  const bodies: { url: string; body: string; csp?: string; nosniff?: string }[] = [];
  const streamAbort = new AbortController();
  try {
    await etcdc.put(`${P}/recipients/eu`).value(euR.text);
    await etcdc.put(`${P}/global/configmaps/default/app/greeting`).value('hello');
    for (const d of daemons) d.start();
    await Promise.all(daemons.map((d) => d.ready()));

    // Off loopback without a token: refused before anything starts, one line, exit 2.
    for (const extra of [[], ['--token-file', idFile]]) {
      const r = spawnSync(process.execPath, [MAIN, 'console', '--listen', '0.0.0.0:0', '--endpoints', etcd.endpoint, ...extra], { encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /^confsync: --listen 0\.0\.0\.0:0 is not a loopback address: give --(token-file|tls-cert)/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }

    console_ = await startConsole(['--listen', '127.0.0.1:0', '--endpoints', etcd.endpoint]);
    const url = console_.url;
    // A raw reader of the stream for the whole test: its text is grepped at the end.
    let streamText = '';
    const stream = await fetch(`${url}api/stream`, { signal: streamAbort.signal });
    const streamHeaders = { csp: stream.headers.get('content-security-policy') ?? undefined, nosniff: stream.headers.get('x-content-type-options') ?? undefined };
    void (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of stream.body!) streamText += decoder.decode(chunk as Uint8Array);
    })().catch(() => undefined);

    // Secrets arrive while the console watches: the sealed one, and plaintext written by
    // hand where a sealed value belongs (in a scope these daemons never read).
    await etcdc.put(`${P}/global/secrets/default/db/password`).value(envelope);
    await etcdc.put(`${P}/clusters/us/secrets/default/db/password`).value(handWritten);

    chrome = await launchChromium();
    const page: Page = await chrome.newPage({ viewport: { width: 1280, height: 720 } });
    page.setDefaultTimeout(10_000);
    const { dialogs, errors: pageErrors } = watchPage(page);
    page.on('response', async (res) => {
      if (res.url().endsWith('/api/stream')) return;
      const h = res.headers();
      bodies.push({ url: res.url(), body: await res.text().catch(() => ''), csp: h['content-security-policy'], nosniff: h['x-content-type-options'] });
    });
    fs.mkdirSync(SHOTS, { recursive: true });

    // Matrix: both nodes in sync.
    await page.goto(url);
    const cell = (node: string) => page.locator(`[data-testid=cell][data-node=${node}]`);
    await until(async () => (await cell('n1').getAttribute('data-state')) === 'sync' && (await cell('n2').getAttribute('data-state')) === 'sync', 'both nodes in sync in the matrix');
    await page.screenshot({ path: path.join(SHOTS, 'matrix.png') });

    // A put: the matrix turns to its revision (the delay is printed, not asserted).
    const t0 = Date.now();
    const rev = Number((await etcdc.put(`${P}/global/configmaps/default/app/greeting`).value('hello again')).header.revision);
    await until(async () => {
      const revs = await Promise.all(['n1', 'n2'].map(async (n) => Number(await cell(n).getAttribute('data-revision'))));
      return revs.every((r) => r >= rev);
    }, `both cells at revision ${rev}`, 10_000);
    const matrixDelay = Date.now() - t0;

    // The stream: the next put appears.
    await page.click('[data-testid=tab-events]');
    const row = (text: string) => page.locator('[data-testid=event]', { hasText: text });
    const t1 = Date.now();
    await etcdc.put(`${P}/global/configmaps/default/app/fresh`).value('v1');
    await row('default/app/fresh').first().waitFor({ timeout: 10_000 });
    const streamDelay = Date.now() - t1;
    process.stdout.write(`# console: put → matrix at the new revision in ${matrixDelay} ms; put → row in the stream in ${streamDelay} ms\n`);

    // Pause holds new events (counted), resume shows them.
    await page.click('[data-testid=pause]');
    for (const i of [1, 2, 3]) await etcdc.put(`${P}/global/configmaps/default/paused/k${i}`).value(`p${i}`);
    await until(async () => Number(/^(\d+) new/.exec((await page.textContent('[data-testid=pending]')) ?? '')?.[1]) >= 3, 'three new events counted while paused');
    assert.equal(await row('default/paused/').count(), 0, 'paused: the new events are not shown');
    await page.click('[data-testid=pause]');
    await until(async () => (await row('default/paused/').count()) === 3, 'resumed: the three events shown');

    // XSS as text: in the stream's preview.
    await etcdc.put(`${P}/global/configmaps/default/xss/k`).value(xss);
    await etcdc.put(`${P}/global/configmaps/other/app2/k`).value('in other');
    await page.fill('[data-testid=f-text]', 'xss');
    const xssRow = row('default/xss/k').first();
    await xssRow.waitFor();
    assert.ok((await xssRow.locator('[data-testid=event-detail]').textContent())!.includes('<script>window.__xss=1</script>'), 'the value shows as text');

    // Namespace filter: only namespace "other".
    await page.fill('[data-testid=f-text]', '');
    await page.fill('[data-testid=f-namespace]', 'other');
    await row('other/app2/k').first().waitFor();
    const paths = await page.locator('[data-testid=event-path]').allTextContents();
    assert.ok(paths.length > 0 && paths.every((p) => p.includes('/other/')), `only namespace other: ${paths.join(', ')}`);
    await page.fill('[data-testid=f-namespace]', '');
    await row('default/paused/k3').first().waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'events.png') });

    // Object view: a click on the row; an override in clusters/eu wins there.
    await etcdc.put(`${P}/clusters/eu/configmaps/default/app/greeting`).value('hello, eu');
    // (the newest row: older ones may have scrolled out of the virtual list's window)
    await row('clusters/eu/configmaps/default/app/greeting').first().click();
    await page.locator('[data-testid=object][data-id="configmaps/default/app"]').waitFor();
    assert.match((await page.textContent('[data-testid=scope-keys][data-scope="clusters/eu"]'))!, /greeting.*hello, eu/s);
    assert.match((await page.textContent('[data-testid=clusters]'))!, /eu.*yes.*greeting ← clusters\/eu/s);
    assert.match((await page.textContent('[data-testid=history][data-scope=global]'))!, /- hello.*\+ hello again/s, 'history shows the diff');
    await page.screenshot({ path: path.join(SHOTS, 'object.png'), fullPage: true });

    // The XSS value in the object view, and nothing of it ran anywhere.
    await page.goto(`${url}#/object/configmaps/default/xss`);
    await page.locator('[data-testid=value]', { hasText: '<img src=x' }).waitFor();
    assert.equal(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss), undefined, 'no script from a value ran');
    assert.equal(await page.locator('main img, main script').count(), 0, 'no element made from a value');
    assert.deepEqual(dialogs, []);

    // A secret: sizes, recipients (by cluster name), revisions; the hand-written plaintext is flagged, not shown.
    await page.goto(`${url}#/object/secrets/default/db`);
    await page.locator('[data-testid=scope-keys][data-scope=global]', { hasText: 'password' }).waitFor();
    assert.match((await page.textContent('[data-testid=scope-keys][data-scope=global]'))!, /password.*eu/s);
    assert.match((await page.textContent('[data-testid=scope-keys][data-scope="clusters/us"]'))!, /not a valid envelope/);
    // However the page is asked: the API has no way to return a value.
    for (const q of ['kind=secrets&namespace=default&name=db', 'kind=secrets&namespace=default&name=db&value=1', 'kind=secrets&namespace=default&name=db/password']) {
      const res = await fetch(`${url}api/object?${q}`);
      bodies.push({ url: res.url, body: await res.text(), csp: res.headers.get('content-security-policy') ?? undefined, nosniff: res.headers.get('x-content-type-options') ?? undefined });
    }

    // A node stopped with SIGTERM revokes its status lease: its cell turns gone.
    await page.goto(`${url}#/matrix`);
    assert.equal(await daemons[1]!.signal('SIGTERM'), 0);
    await until(async () => (await cell('n2').getAttribute('data-state')) === 'gone', 'n2 gone', 10_000);
    assert.equal(await cell('n1').getAttribute('data-state'), 'sync');
    await page.screenshot({ path: path.join(SHOTS, 'matrix-gone.png') });

    // etcd down and back: the page says so, the console lists again and goes on watching.
    await etcd.kill();
    await until(async () => (await page.getAttribute('[data-testid=conn]', 'data-state')) === 'retrying', 'the page shows the console retrying');
    await etcd.start();
    await until(async () => (await page.getAttribute('[data-testid=conn]', 'data-state')) === 'watching', 'watching again', 20_000);
    const after = Number((await etcdc.put(`${P}/global/configmaps/default/app/after-outage`).value('x')).header.revision);
    await until(async () => Number(await cell('n1').getAttribute('data-revision')) >= after, 'n1 at the post-outage revision in the matrix', 20_000);
    assert.deepEqual(pageErrors, [], 'no script error on the page');

    // Every response: the CSP and nosniff; no secret value, no envelope anywhere.
    streamAbort.abort();
    assert.ok(streamText.includes('clusters/us/secrets/default/db/password'), 'the stream saw the secret keys');
    bodies.push({ url: `${url}api/stream`, body: streamText, ...streamHeaders });
    assert.ok(bodies.length > 10, `${bodies.length} responses`);
    for (const b of bodies) {
      assert.match(b.csp ?? '', /default-src 'self'; script-src 'self' 'sha256-[A-Za-z0-9+/=]+'; style-src 'self'/, `CSP on ${b.url}`);
      assert.equal(b.nosniff, 'nosniff', `nosniff on ${b.url}`);
      for (const s of [secret, handWritten, envelope, envelope.slice(20, 60)]) assert.ok(!b.body.includes(s), `${b.url} holds a secret value or envelope`);
    }
    assert.ok(!console_.log().includes(secret) && !console_.log().includes(handWritten), 'console log holds no secret');

    // On loopback without a token, a request naming another host is refused (DNS rebinding).
    const rebound = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${url}api/stream`);
      http.get({ host: u.hostname, port: u.port, path: u.pathname, headers: { host: `attacker.example:${u.port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on('error', reject);
    });
    assert.equal(rebound, 421);

    // With a token: nothing but /login without it (or with a wrong one); bearer and the
    // session cookie /login sets both work; the console stays read-only.
    const tokenFile = path.join(keyDir, 'token');
    fs.writeFileSync(tokenFile, 'a-console-token-0123456789abcdef\n', { mode: 0o600 });
    const guarded = await startConsole(['--listen', '127.0.0.1:0', '--endpoints', etcd.endpoint, '--token-file', tokenFile]);
    try {
      const get = (p: string, headers: Record<string, string> = {}) => fetch(`${guarded.url}${p}`, { headers, redirect: 'manual' });
      assert.equal((await get('api/object?kind=configmaps&namespace=default&name=app')).status, 401);
      assert.equal((await get('api/stream', { authorization: 'Bearer wrong-token-0123456789abcdef' })).status, 401);
      assert.equal((await get('')).headers.get('location'), '/login');
      assert.equal((await get('api/object?kind=configmaps&namespace=default&name=app', { authorization: 'Bearer a-console-token-0123456789abcdef' })).status, 200);
      const login = await fetch(`${guarded.url}login`, { method: 'POST', body: new URLSearchParams({ token: 'a-console-token-0123456789abcdef' }), redirect: 'manual' });
      assert.equal(login.status, 303);
      const cookie = login.headers.get('set-cookie')!;
      assert.match(cookie, /HttpOnly; SameSite=Strict/);
      assert.ok(!cookie.includes('a-console-token'), 'the cookie is a session id, not the token');
      const page = await get('', { cookie: cookie.split(';')[0]! });
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-security-policy')!, /^default-src 'self'/);
      const write = await fetch(`${guarded.url}api/object`, { method: 'PUT', headers: { authorization: 'Bearer a-console-token-0123456789abcdef' } });
      assert.equal(write.status, 405);
      // Refusals carry the headers too.
      for (const res of [write, await get('api/stream'), await get('nowhere', { authorization: 'Bearer a-console-token-0123456789abcdef' })]) {
        assert.match(res.headers.get('content-security-policy') ?? '', /^default-src 'self'/, `CSP on a ${res.status}`);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      }
    } finally {
      await guarded.stop();
    }
  } finally {
    streamAbort.abort();
    await chrome?.close();
    await console_?.stop();
    etcdc.close();
    await Promise.all(daemons.map((d) => d.cleanup()));
    await etcd.stop();
    fs.rmSync(keyDir, { recursive: true, force: true });
  }
});
