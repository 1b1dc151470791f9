// The page's one EventSource (/api/stream) feeds this store; whatever arrives in
// one animation frame is applied at once and rendered once. No polling.
import { useEffect, useState } from 'preact/hooks';

/** Events kept in the page (newest first); older ones fall off. */
export const KEEP = 5000;

export const store = {
  state: 'connecting', detail: '', prefix: '', matrix: null, objects: 0,
  events: [], paused: false, pending: [], pendingCount: 0, rate: 0, version: 0,
};
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

function connect() {
  const source = new EventSource('/api/stream');
  source.addEventListener('hello', (m) => {
    performance.mark('hello-received');
    const hello = JSON.parse(m.data);
    performance.mark('hello-parsed');
    store.prefix = hello.prefix;
    store.state = hello.state;
    nextMatrix = { matrix: hello.matrix, objects: hello.objects };
    // A reconnect starts afresh: the server's recent events replace ours.
    store.events = hello.recent.slice().reverse();
    schedule();
  });
  source.addEventListener('events', (m) => {
    const { events } = JSON.parse(m.data);
    for (const e of events) incoming.push(e);
    arrivals.push({ t: performance.now(), n: events.length });
    schedule();
  });
  source.addEventListener('matrix', (m) => {
    nextMatrix = JSON.parse(m.data);
    schedule();
  });
  source.addEventListener('state', (m) => {
    const s = JSON.parse(m.data);
    store.state = s.state;
    store.detail = s.detail || '';
    schedule();
  });
  source.onerror = () => {
    store.state = 'disconnected (reconnecting)';
    schedule();
  };
}

export function useStore() {
  const [, set] = useState(0);
  useEffect(() => {
    subscribers.add(set);
    return () => subscribers.delete(set);
  }, []);
  return store;
}

// At module evaluation, before the page's own modules run: the stream's first message is on its way sooner.
connect();
