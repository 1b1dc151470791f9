// The event stream, newest first: pause (new events are counted and kept, shown on
// resume), filters (namespace, cluster, kind, free text), a click opens the object.
// The list is virtual: only the rows in view (plus a margin) are in the DOM, so
// thousands of events a second cost one small render per frame.
import { h } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import htm from 'htm';
import { setPaused, useStore } from './store.js';

const html = htm.bind(h);
const ROW = 24;
const VIEW_ROWS = 30;
const MARGIN = 10;
const KINDS = ['', 'configmaps', 'secrets', 'status', 'recipient', 'release', 'invalid'];

const time = (ms) => new Date(ms).toISOString().slice(11, 23);

function matches(e, f) {
  if (f.namespace && e.namespace !== f.namespace) return false;
  if (f.cluster && e.cluster !== f.cluster) return false;
  if (f.kind && e.kind !== f.kind) return false;
  if (f.text) {
    const hay = `${e.path} ${e.preview ?? ''} ${e.note ?? ''}`.toLowerCase();
    if (!hay.includes(f.text.toLowerCase())) return false;
  }
  return true;
}

function open(e) {
  if ((e.kind === 'configmaps' || e.kind === 'secrets') && e.namespace && e.name) {
    location.hash = `#/object/${e.kind}/${encodeURIComponent(e.namespace)}/${encodeURIComponent(e.name)}`;
  }
}

function Row({ e }) {
  const linked = (e.kind === 'configmaps' || e.kind === 'secrets') && e.name;
  return html`<div class=${`row op-${e.op} k-${e.kind}${linked ? ' linked' : ''}`} data-testid="event" data-rev=${e.rev} data-kind=${e.kind} onClick=${() => open(e)}>
    <span class="t">${time(e.at)}</span>
    <span class="rev">r${e.rev}</span>
    <span class="op">${e.op}</span>
    <span class="kind">${e.kind}</span>
    <span class="path" data-testid="event-path">${e.path}</span>
    <span class="size">${e.op === 'put' ? `${e.size} B` : ''}</span>
    <span class="detail" data-testid="event-detail">${e.preview ?? e.note ?? ''}</span>
  </div>`;
}

export function EventsView() {
  const s = useStore();
  const [f, setF] = useState({ namespace: '', cluster: '', kind: '', text: '' });
  const [top, setTop] = useState(0);
  const shown = useMemo(() => (f.namespace || f.cluster || f.kind || f.text ? s.events.filter((e) => matches(e, f)) : s.events), [s.events, f]);
  const first = Math.max(0, Math.floor(top / ROW) - MARGIN);
  const last = Math.min(shown.length, first + VIEW_ROWS + 2 * MARGIN);
  const set = (k) => (ev) => setF({ ...f, [k]: ev.currentTarget.value.trim() });
  return html`<div class="toolbar">
      <button data-testid="pause" onClick=${() => setPaused(!s.paused)}>${s.paused ? 'Resume' : 'Pause'}</button>
      <span data-testid="pending" class=${s.paused ? 'pending on' : 'pending'}>${s.paused ? `${s.pendingCount} new while paused` : 'live'}</span>
      <input placeholder="namespace" data-testid="f-namespace" onInput=${set('namespace')} />
      <input placeholder="cluster" data-testid="f-cluster" onInput=${set('cluster')} />
      <select data-testid="f-kind" onChange=${set('kind')}>${KINDS.map((k) => html`<option value=${k}>${k || 'any kind'}</option>`)}</select>
      <input placeholder="text" data-testid="f-text" onInput=${set('text')} />
      <span class="muted" data-testid="shown">${shown.length} of ${s.events.length} shown</span>
    </div>
    <div class="list" data-testid="event-list" style=${{ height: `${VIEW_ROWS * ROW}px` }} onScroll=${(ev) => setTop(ev.currentTarget.scrollTop)}>
      <div style=${{ height: `${shown.length * ROW}px`, position: 'relative' }}>
        <div style=${{ transform: `translateY(${first * ROW}px)` }}>
          ${shown.slice(first, last).map((e) => html`<${Row} key=${e.seq} e=${e} />`)}
        </div>
      </div>
    </div>`;
}
