/**
 * The console page's data block (src/console/page.ts): the first screenful of the
 * matrix goes into the HTML as `<script type="application/json">`, and everything in
 * it comes from etcd. Checked three ways: the escaping itself (table-driven: nothing
 * HTML reads as markup is left, JSON.parse gives the value back); the page as the
 * server sends it, built from status keys whose names and last error hold
 * `</script><script>alert(1)</script>`, markup and U+2028/U+2029 (the block ends where
 * it should, the CSP allows the import map and nothing else inline); and that page in
 * chromium with its event stream refused, so what shows comes from the block alone:
 * the names render as text, no element is made from them and nothing runs.
 * No etcd: the feed is never started, its model is fed by hand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { Feed } from '../src/console/feed.js';
import { dataBlockText, FIRST_ROWS, FIRST_SCREEN_ID } from '../src/console/page.js';
import { startConsoleServer } from '../src/console/server.js';
import { Keyspace } from '../src/keyspace.js';
import { createLogger } from '../src/log.js';
import { CHROMIUM, launchChromium, watchPage } from './harness/console.js';

const BREAKOUT = '</script><script>alert(1)</script>';

test('data block text: no <, >, & or U+2028/2029 left; JSON.parse gives the value back', () => {
  const values: unknown[] = [
    BREAKOUT,
    '<!-- <script>',
    '&lt;/script&gt; & ]]>',
    'line\u2028separator\u2029paragraph',
    { [BREAKOUT]: [BREAKOUT, 1, null, { '\u2028': '</SCRIPT >' }] },
    'plain text, "quotes", back\\slash',
  ];
  for (const v of values) {
    const text = dataBlockText(v);
    assert.doesNotMatch(text, /[<>&\u2028\u2029]/, `escaped: ${text}`);
    assert.deepEqual(JSON.parse(text), v);
  }
});

const skip = fs.existsSync(CHROMIUM) ? false : `chromium not found at ${CHROMIUM}: browser part skipped`;
// Names come from the status key's path, so they cannot hold a '/' (nor a closing tag); the
// last error is a value from the status JSON and can hold anything. No `<!--` here: in a script
// element, `<!--` before `<script>` makes HTML skip the next `</script>`, which would hide a
// missing escape from this test (the table above has it).
const cluster = `<script>alert(1)\u2028x`;
const node = `n<img src=x onerror="window.__xss=1">\u2029`;
const reason = `${BREAKOUT}\u2028`;

/** The console's server over a feed whose model holds the odd status and FIRST_ROWS + 2 plain clusters. */
async function servePage() {
  const ks = new Keyspace('/confsync');
  const feed = new Feed({} as Etcd3, ks, createLogger('silent'), 15);
  const now = new Date().toISOString();
  const status = (c: string, n: string, extra = {}) =>
    Buffer.from(JSON.stringify({ cluster: c, node: n, revision: 5, updatedAt: now, startedAt: now, objects: 1, errors: 1, failing: 0, state: 'watching', ready: true, ...extra }));
  feed.model.apply({ key: ks.statusKey(cluster, node), op: 'put', rev: 5, value: status(cluster, node, { lastError: { path: 'global/configmaps/default/x/k', reason } }) }, Date.now(), true);
  for (let i = 0; i < FIRST_ROWS + 2; i++) feed.model.apply({ key: ks.statusKey(`z-${i}`, 'n'), op: 'put', rev: 6, value: status(`z-${i}`, 'n') }, Date.now(), true);
  return startConsoleServer({ host: '127.0.0.1', port: 0, client: {} as Etcd3, ks, feed, logger: createLogger('silent') });
}

test('the page as sent: a status holding a script end tag and line separators stays inside the data block', async () => {
  const server = await servePage();
  try {
    const res = await fetch(server.url);
    const html = await res.text();
    // The CSP allows the import map by its hash and no other inline script: the block needs none.
    assert.match(res.headers.get('content-security-policy')!, /(^|; )script-src 'self' 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    const open = `<script type="application/json" id="${FIRST_SCREEN_ID}">`;
    const start = html.indexOf(open);
    assert.ok(start >= 0, 'the page has its data block');
    const end = html.indexOf('</script>', start);
    assert.ok(html.slice(end + '</script>'.length).startsWith('\n</body>'), 'the block ends where the server ended it');
    assert.equal((html.match(/<script/gi) ?? []).length, 3, 'import map, app.js, the data block: no script made from a value');
    const screen = JSON.parse(html.slice(start + open.length, end));
    // More clusters than the block holds: it carries the first rows and says how many there are.
    assert.equal(screen.matrix.rows.length, FIRST_ROWS);
    assert.equal(screen.matrix.rowsTotal, FIRST_ROWS + 3);
    const row = screen.matrix.rows.find((r: { cluster: string }) => r.cluster === cluster);
    assert.ok(row, 'the cluster with the odd name is in the block, name intact');
    assert.equal(row.nodes[0].node, node);
    assert.equal(row.nodes[0].lastError.reason, reason);
  } finally {
    await server.close();
  }
});

test('the page in chromium, its stream refused: the block\'s names render as text and nothing runs', { skip }, async () => {
  const server = await servePage();
  const chrome = await launchChromium();
  try {
    const page = await chrome.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(10_000);
    const { dialogs, errors } = watchPage(page);
    // No stream: what the page shows can only come from the data block.
    await page.route('**/api/stream', (r) => r.abort());
    await page.goto(server.url);
    await page.waitForFunction(() => document.body.dataset.matrix === 'ready');
    const shown = page.locator('[data-testid=cluster-row]').filter({ has: page.locator('.cluster', { hasText: '<script>alert(1)' }) });
    assert.equal(await shown.locator('.cluster').textContent(), cluster, 'the cluster name shows as text, U+2028 included');
    assert.equal(await shown.getAttribute('data-cluster'), cluster);
    const cell = shown.locator('[data-testid=cell]');
    assert.equal(await cell.getAttribute('data-node'), node);
    assert.equal(await cell.locator('b').textContent(), node);
    assert.ok((await cell.getAttribute('title'))!.includes(reason), 'the last error is in the tooltip, as text');
    assert.equal(await page.locator('[data-testid=cluster-row]').count(), FIRST_ROWS, "the block's rows, no more");
    assert.equal(await page.locator('main script, main img').count(), 0, 'no element made from a value');
    assert.equal(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss), undefined, 'nothing ran');
    assert.deepEqual(dialogs, []);
    assert.deepEqual(errors, []);
  } finally {
    await chrome.close();
    await server.close();
  }
});
