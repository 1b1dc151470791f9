/**
 * The console's page (GET /) with its first screenful inside: the first FIRST_ROWS
 * cluster rows of the matrix and what the header shows, as a JSON data block
 *
 *   <script type="application/json" id="first-screen">{…}</script>
 *
 * so the page paints them as soon as its modules run, without waiting for the event
 * stream (which then brings the whole matrix). A data block is never executed, so the
 * Content-Security-Policy needs no change for it. Everything in it comes from etcd,
 * written by anyone who can write there: `dataBlock` escapes `<`, `>` and `&` (nothing
 * can close the element or open a comment), and U+2028/U+2029 (line terminators to a
 * JavaScript parser, should the text ever be read as script) — each as a JSON \u escape,
 * so JSON.parse of the element's text gives back exactly the value.
 */
import type { Matrix } from './model.js';

/** Cluster rows in the page itself: a 1280×800 screenful. The page renders the rest from the stream. */
export const FIRST_ROWS = 5;
export const FIRST_SCREEN_ID = 'first-screen';

/**
 * What the page needs to paint its first screen: the `hello` message's fields, the matrix cut
 * short (no connection state: the page says "connecting" until its stream answers).
 */
export interface FirstScreen {
  prefix: string;
  objects: number;
  /** The first FIRST_ROWS rows; `rowsTotal` says how many the whole matrix has. */
  matrix: Matrix & { rowsTotal: number };
}

const ESCAPES: Record<string, string> = { '<': '\\u003c', '>': '\\u003e', '&': '\\u0026', '\u2028': '\\u2028', '\u2029': '\\u2029' };

/** A value as the text of a `<script type="application/json">`: JSON with nothing that HTML reads as markup. */
export function dataBlockText(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => ESCAPES[c]!);
}

export function firstScreen(o: { prefix: string; objects: number; matrix: Matrix }): FirstScreen {
  return { prefix: o.prefix, objects: o.objects, matrix: { ...o.matrix, rows: o.matrix.rows.slice(0, FIRST_ROWS), rowsTotal: o.matrix.rows.length } };
}

/** index.html split where the data block goes (its `<!-- first-screen -->` comment). */
export function pageParts(index: Buffer): { before: Buffer; after: Buffer } {
  const marker = Buffer.from(`<!-- ${FIRST_SCREEN_ID} -->`);
  const at = index.indexOf(marker);
  if (at < 0) throw new Error(`console: web/index.html has no ${marker.toString()} marker`);
  return { before: index.subarray(0, at), after: index.subarray(at + marker.length) };
}

export function renderPage(parts: { before: Buffer; after: Buffer }, screen: FirstScreen): Buffer {
  const block = `<script type="application/json" id="${FIRST_SCREEN_ID}">${dataBlockText(screen)}</script>`;
  return Buffer.concat([parts.before, Buffer.from(block), parts.after]);
}
