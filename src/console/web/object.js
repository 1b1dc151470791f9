// One object: its keys per scope (global, each cluster override) and which scope
// wins for each cluster, @meta and placement, and the history etcd still holds.
// Secrets come with sizes, recipients and revisions only: the server sends no value.
import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);

/** Lines only in `before` (−) and only in `after` (+), in order: enough for config values. */
function diff(before, after) {
  const a = (before ?? '').split('\n');
  const b = (after ?? '').split('\n');
  const inA = new Set(a);
  const inB = new Set(b);
  const out = [];
  if (before !== undefined) for (const l of a) if (!inB.has(l)) out.push(['del', `- ${l}`]);
  if (after !== undefined) for (const l of b) if (!inA.has(l)) out.push(['add', `+ ${l}`]);
  return out;
}

function Keys({ scope, kind }) {
  return html`<table class="keys" data-testid="scope-keys" data-scope=${scope.scope}>
    <thead><tr><th>key</th><th>size</th><th>revision</th><th>version</th><th>${kind === 'secrets' ? 'sealed to' : 'value'}</th></tr></thead>
    <tbody>${scope.keys.map((k) => html`<tr key=${k.key}>
      <td>${k.key}</td><td>${k.size} B</td><td>${k.revision}</td><td>${k.version}</td>
      <td>${kind === 'secrets'
        ? (k.sealed ? k.recipients.join(', ') : html`<span class="err">not a valid envelope (not materialized)</span>`)
        : k.binary ? html`<span class="muted">binary</span>` : html`<pre data-testid="value">${k.value}${k.truncated ? '…' : ''}</pre>`}</td>
    </tr>`)}</tbody>
  </table>`;
}

export function ObjectView({ parts: [kind, namespace, name] }) {
  const [o, setO] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    setO(null);
    setError('');
    const q = new URLSearchParams({ kind: kind ?? '', namespace: namespace ?? '', name: name ?? '' });
    fetch(`/api/object?${q}`).then(async (r) => {
      const body = await r.json();
      if (!r.ok) throw new Error(body.error);
      setO(body);
    }).catch((e) => setError(String(e.message)));
  }, [kind, namespace, name]);
  if (error) return html`<p class="err" data-testid="object-error">${error}</p>`;
  if (!o) return html`<p class="muted">reading ${kind}/${namespace}/${name}…</p>`;
  return html`<div data-testid="object" data-id=${o.id}>
    <h2>${o.id}</h2>
    ${o.scopes.map((s) => html`<section key=${s.scope}>
      <h3>${s.scope}</h3>
      <${Keys} scope=${s} kind=${o.kind} />
      ${s.meta ? html`<div class="meta"><strong>@meta</strong>${s.meta.error ? html` <span class="err">${s.meta.error} (the object keeps its last good state)</span>` : ''}<pre>${s.meta.text}</pre></div>` : ''}
    </section>`)}
    <h3>Per cluster: placement and which scope wins</h3>
    <table class="keys" data-testid="clusters"><thead><tr><th>cluster</th><th>gets it</th><th>keys (scope that wins)</th></tr></thead>
      <tbody>${o.clusters.map((c) => html`<tr key=${c.cluster}><td>${c.cluster}</td><td>${c.admitted}</td>
        <td>${c.keys.map((k) => html`<span class=${k.from === 'global' ? 'chip' : 'chip override'}>${k.key} ← ${k.from}</span>`)}</td></tr>`)}</tbody>
    </table>
    <h3>History (revisions etcd still holds)</h3>
    ${o.history.map((hs) => html`<section key=${hs.scope} data-testid="history" data-scope=${hs.scope}>
      <h4>${hs.scope}${hs.compactRevision ? html` <span class="muted">(compacted before r${hs.compactRevision + 1})</span>` : ''}</h4>
      ${hs.error ? html`<p class="err">${hs.error}</p>` : ''}
      ${hs.revisions.map((r) => html`<div class="hrev" key=${r.revision}><strong>r${r.revision}</strong>
        ${r.changes.map((c) => html`<div class="change"><span>${c.op} ${c.key}</span> <span class="muted">${c.beforeSize ?? '–'} → ${c.afterSize ?? '–'} B</span>
          ${o.kind === 'configmaps' ? html`<pre class="diff">${diff(c.before, c.after).map(([cls, l]) => html`<div class=${cls}>${l}</div>`)}</pre>` : ''}</div>`)}
      </div>`)}
    </section>`)}
  </div>`;
}
