// Clusters × nodes: each cell a node's applied revision, its lag behind the newest
// change it watches (revisions, and seconds since the console saw that change), the
// age of its status and its error count; the row's head summarises the cluster.
import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';
import { useStore } from './store.js';

const html = htm.bind(h);
const LABEL = { sync: 'in sync', behind: 'behind', stale: 'stale', error: 'error', gone: 'gone' };
const secs = (s) => (s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`);

function Cell({ c }) {
  const title = [
    `${c.cluster}/${c.node}: ${LABEL[c.state]}`,
    `applied revision ${c.revision}; ${c.lag} revision(s) behind${c.lag ? `, for ${secs(c.lagSeconds)}` : ''}`,
    `status ${secs(c.ageSeconds)} old; ${c.ready ? 'ready' : 'not ready'}, ${c.connection}; ${c.objects} objects; ${c.errors} error(s); ${c.failing} failing`,
    c.lastError ? `last error ${c.lastError.path}: ${c.lastError.reason}` : '',
    c.goneSince ? `status gone since ${c.goneSince}` : '',
    c.held ? `${c.held} removal(s) held` : '',
  ].filter(Boolean).join('\n');
  // Two elements a cell (a screenful is 100 cells, rendered in one go at first paint): the rest is one text node, lines by CSS.
  const lines = [
    `r${c.revision}${c.lag ? ` −${c.lag} · ${secs(c.lagSeconds)}` : ''}`,
    `${c.state === 'gone' ? 'gone' : `age ${secs(c.ageSeconds)}`}${c.errors ? ` · ${c.errors} err` : ''}`,
  ].join('\n');
  return html`<div class=${`cell st-${c.state}`} title=${title} data-testid="cell" data-cluster=${c.cluster} data-node=${c.node} data-state=${c.state} data-revision=${c.revision}><b>${c.node}</b>${lines}</div>`;
}

/** Cluster rows added per animation frame after the first screenful: the page answers input meanwhile. */
const ROWS_PER_FRAME = 10;
/** Cluster rows in the first render: a 1280×800 screenful (as many as the page's data block holds). */
const FIRST_ROWS = 5;

function Row({ r }) {
  return html`<div class="mrow" data-testid="cluster-row" data-cluster=${r.cluster} data-state=${r.summary.state}>
    <div class=${`mhead st-${r.summary.state}`}>
      <div class="cluster">${r.cluster}</div>
      <div>${r.summary.sync}/${r.summary.nodes} in sync</div>
      <div class="muted">min r${r.summary.minRevision} · max lag ${r.summary.maxLag}${r.summary.errors ? ` · ${r.summary.errors} err` : ''}</div>
    </div>
    <div class="cells">${r.nodes.map((c) => html`<${Cell} key=${c.node} c=${c} />`)}</div>
  </div>`;
}

/**
 * The first screenful of rows at once (from the page's data block until the stream's whole
 * matrix arrives), then ROWS_PER_FRAME more each frame; rows are blocks with
 * `content-visibility: auto`, so the browser lays out and paints only those near the view.
 * Marks: `matrix-rendered` after the first render with rows, `matrix-complete` once every
 * row of the whole matrix is in the DOM (bench/console.ts reads both).
 */
export function MatrixView() {
  const s = useStore();
  const m = s.matrix;
  const [limit, setLimit] = useState(FIRST_ROWS);
  // A matrix from the data block has only its first rows; the stream's has them all.
  const whole = m !== null && m.rowsTotal === undefined;
  useEffect(() => {
    if (!m || m.rows.length === 0) return undefined;
    if (!document.body.dataset.matrix) {
      document.body.dataset.matrix = 'ready';
      performance.mark('matrix-rendered');
    }
    if (limit >= m.rows.length) {
      if (whole && !document.body.dataset.matrixComplete) {
        document.body.dataset.matrixComplete = 'ready';
        performance.mark('matrix-complete');
      }
      return undefined;
    }
    const id = requestAnimationFrame(() => setLimit(limit + ROWS_PER_FRAME));
    return () => cancelAnimationFrame(id);
  });
  if (!m) return html`<p class="muted">waiting for the first list…</p>`;
  if (m.rows.length === 0) return html`<p class="muted" data-testid="matrix-empty">No daemon reports under ${s.prefix}/status/ yet.</p>`;
  return html`<div class="legend">${Object.entries(LABEL).map(([k, v]) => html`<span class=${`chip st-${k}`}>${v}</span>`)}</div>
    <div class="matrix" data-testid="matrix">
      ${m.rows.slice(0, limit).map((r) => html`<${Row} key=${r.cluster} r=${r} />`)}
    </div>`;
}
