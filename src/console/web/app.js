// The console page: one EventSource (/api/stream) feeds a small store; whatever
// arrives in one animation frame is applied at once and rendered once. No polling.
// Everything from etcd is rendered as text by preact (never as HTML).
import { h, render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { useStore } from './store.js';
import htm from 'htm';
import { MatrixView } from './matrix.js';
import { EventsView } from './events.js';
import { ObjectView } from './object.js';

const html = htm.bind(h);
performance.mark('app-start');

function useHash() {
  const [hash, setHash] = useState(location.hash || '#/matrix');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/matrix');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function App() {
  const s = useStore();
  const hash = useHash();
  const [, view, ...rest] = hash.split('/');
  const tab = (name, label) => html`<a href=${`#/${name}`} class=${view === name ? 'tab active' : 'tab'} data-testid=${`tab-${name}`}>${label}</a>`;
  const head = s.matrix ? s.matrix.head : 0;
  return html`
    <header>
      <strong>confsync</strong>
      <nav>${tab('matrix', 'Matrix')}${tab('events', 'Events')}${view === 'object' ? tab('object', 'Object') : null}</nav>
      <span class="status" data-testid="conn" data-state=${s.state}>${s.state}${s.detail ? `: ${s.detail}` : ''}</span>
      <span class="muted">prefix ${s.prefix} · etcd revision <span data-testid="head">${head}</span> · ${s.objects} objects · ${s.rate} events/s</span>
    </header>
    <main>
      ${view === 'events' ? html`<${EventsView} />` : view === 'object' ? html`<${ObjectView} parts=${rest.map(decodeURIComponent)} />` : html`<${MatrixView} />`}
    </main>`;
}

const root = document.getElementById('app');
root.textContent = ''; // the static "loading…" (preact 11 renders beside what is there)
render(html`<${App} />`, root);
