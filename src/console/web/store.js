// The page's one EventSource (/api/stream) feeds this store; whatever arrives in one animation
// frame is applied at once and rendered once. No polling. Until the stream's first message,
// the store holds the page's first screen: the data block the server put in the page
// (page.ts: the first rows of the matrix and the header's fields), so the page paints
// those without waiting for the stream.
import { useEffect, useState } from 'preact/hooks';

/** Events kept in the page (newest first); older ones fall off. */
export const KEEP = 5000;

export const store = {
  state: 'connecting', detail: '', prefix: '', matrix: null, objects: 0,
  events: [], paused: false, pending: [], pendingCount: 0, rate: 0, version: 0,
};
// The data block's text is JSON (never executed: type application/json). A matrix from it
// carries `rowsTotal` beyond its rows: the view knows the rest is still to come. The state
// stays "connecting" until the stream answers: what the block shows is not live yet.
const first = document.getElementById('first-screen');
if (first) {
  const screen = JSON.parse(first.textContent);
  store.prefix = screen.prefix;
  store.objects = screen.objects;
  store.matrix = screen.matrix;
}
const subscribers = new Set();
let incoming = [];
let nextMatrix = null;
let scheduled = false;
let arrivals = [];

function changed() {
  store.version++;
  for (const fn of subscribers) fn(store.version);
}

/** Apply everything that arrived since the last frame: one state change, one render. */
function frame() {
  scheduled = false;
  if (nextMatrix) {
    store.matrix = nextMatrix.matrix;
    store.objects = nextMatrix.objects;
    nextMatrix = null;
  }
  if (incoming.length > 0) {
    const batch = incoming.reverse();
    incoming = [];
    if (store.paused) {
      store.pending = batch.concat(store.pending).slice(0, KEEP);
      store.pendingCount += batch.length;
    } else {
      store.events = batch.concat(store.events).slice(0, KEEP);
    }
  }
  const now = performance.now();
  arrivals = arrivals.filter((a) => now - a.t < 1000);
  store.rate = arrivals.reduce((s, a) => s + a.n, 0);
  changed();
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(frame);
  }
}

export function setPaused(paused) {
  store.paused = paused;
  if (!paused) {
    store.events = store.pending.concat(store.events).slice(0, KEEP);
    store.pending = [];
    store.pendingCount = 0;
  }
  changed();
}

/** One stream message into the store. */
function receive(type, data) {
  const msg = JSON.parse(data);
  if (type === 'hello') {
    performance.mark('hello-parsed');
    store.prefix = msg.prefix;
    store.state = msg.state;
    nextMatrix = { matrix: msg.matrix, objects: msg.objects };
    // A reconnect starts afresh: the server's recent events replace ours.
    store.events = msg.recent.slice().reverse();
  } else if (type === 'events') {
    for (const e of msg.events) incoming.push(e);
    arrivals.push({ t: performance.now(), n: msg.events.length });
  } else if (type === 'matrix') {
    nextMatrix = msg;
  } else if (type === 'state') {
    store.state = msg.state;
    store.detail = msg.detail || '';
  }
  schedule();
}

/**
 * The store, and a re-render on every change. Effects run after the browser paints, so a
 * change can land between this render and the subscription (the matrix arriving while the
 * first screen paints): the effect compares versions and renders again if it missed one.
 */
export function useStore() {
  const [, set] = useState(0);
  const rendered = store.version;
  useEffect(() => {
    subscribers.add(set);
    if (store.version !== rendered) set(store.version);
    return () => subscribers.delete(set);
  }, []);
  return store;
}

const source = new EventSource('/api/stream');
for (const type of ['hello', 'events', 'matrix', 'state']) {
  source.addEventListener(type, (m) => {
    if (type === 'hello') performance.mark('hello-received');
    receive(type, m.data);
  });
}
source.onerror = () => {
  store.state = 'disconnected (reconnecting)';
  schedule();
};
