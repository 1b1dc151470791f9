/**
 * The object view: one object's keys in every scope that holds it, which scope
 * wins for each cluster, its @meta and placement, and its history as etcd still
 * keeps it. Read from etcd when asked (one range per scope, one history replay per
 * scope), never cached.
 *
 * Secrets: a value is reduced to its size, its sealed version's recipients (as
 * cluster names where a registered recipient matches, else fingerprints) and its
 * revisions, here, before anything is serialised: no field of the answer can hold
 * an envelope or a value, whatever the request asks.
 */
import type { Etcd3 } from 'etcd3';
import { readHistory } from '../admin/history.js';
import { parseMeta, placementAdmits, type Meta } from '../desired/meta.js';
import { envelopeRecipients } from '../envelope/envelope.js';
import { parseRecipient } from '../envelope/identity.js';
import { UserError } from '../errors.js';
import { clusterScope, GLOBAL, isKind, isSealed, nameError, namespaceError, printable, type Keyspace, type ObjectRef, type Scope } from '../keyspace.js';
import type { ConsoleModel } from './model.js';

/** Config values longer than this are cut (the page shows text, not files). */
const VALUE_MAX = 16 * 1024;

export interface KeyView {
  key: string;
  size: number;
  revision: number;
  version: number;
  /** Config only: the value as text (undefined when binary). */
  value?: string;
  binary?: boolean;
  truncated?: boolean;
  /** Secrets only: who the envelope is sealed to; undefined when it is not a valid envelope. */
  recipients?: string[];
  sealed?: boolean;
}

export interface ScopeView {
  scope: string;
  keys: KeyView[];
  meta?: { text: string; parsed?: Meta; error?: string };
}

export interface HistoryChange {
  key: string;
  op: 'put' | 'delete';
  beforeSize?: number;
  afterSize?: number;
  /** Config only. */
  before?: string;
  after?: string;
}

export interface ObjectView {
  id: string;
  kind: string;
  namespace: string;
  name: string;
  scopes: ScopeView[];
  /** Per known cluster: does the placement admit it, and which scope each key comes from. */
  clusters: { cluster: string; admitted: 'yes' | 'no' | 'depends on the cluster labels'; keys: { key: string; from: string }[] }[];
  history: { scope: string; compactRevision: number; head: number; revisions: { revision: number; changes: HistoryChange[] }[]; error?: string }[];
}

function text(value: Buffer | undefined): { value?: string; binary?: boolean; truncated?: boolean } {
  if (!value) return {};
  const t = new TextDecoder('utf-8', { fatal: false }).decode(value.subarray(0, VALUE_MAX));
  if (t.includes('\ufffd')) return { binary: true };
  return { value: t, ...(value.length > VALUE_MAX && { truncated: true }) };
}

/** The object named by the request's query, validated by the keyspace's own rules. */
export function refFrom(q: URLSearchParams): ObjectRef {
  const kind = q.get('kind') ?? '';
  const namespace = q.get('namespace') ?? '';
  const name = q.get('name') ?? '';
  if (!isKind(kind)) throw new UserError(`kind "${printable(kind.slice(0, 40))}": must be configmaps or secrets`);
  const err = namespaceError(namespace) ?? nameError(name);
  if (err) throw new UserError(err);
  return { kind, namespace, name };
}

async function recipientNames(client: Etcd3, ks: Keyspace): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  const all = await client.getAll().prefix(ks.recipientsPrefix()).strings();
  for (const [key, value] of Object.entries(all)) {
    const parsed = ks.parse(key);
    if (parsed.type !== 'recipient') continue;
    try {
      names.set(parseRecipient(value.trim()).id, parsed.cluster);
    } catch {
      // A bad registration is `confsync recipients`' business; here it names nobody.
    }
  }
  return names;
}

export async function readObject(client: Etcd3, ks: Keyspace, model: ConsoleModel, ref: ObjectRef): Promise<ObjectView> {
  const id = `${ref.kind}/${ref.namespace}/${ref.name}`;
  const sealed = isSealed(ref.kind);
  const scopes: Scope[] = model.scopesOf(id).map((s) => (s === 'global' ? GLOBAL : clusterScope(s.slice('clusters/'.length))));
  if (scopes.length === 0) scopes.push(GLOBAL);
  const names = sealed ? await recipientNames(client, ks) : new Map<string, string>();
  const views: ScopeView[] = [];
  for (const scope of scopes) {
    const prefix = ks.kindPrefix(scope, ref.kind, ref.namespace, ref.name);
    const res = await client.getAll().prefix(prefix).exec();
    const view: ScopeView = { scope: scope.type === 'global' ? 'global' : `clusters/${scope.cluster}`, keys: [] };
    for (const kv of res.kvs) {
      const key = kv.key.toString().slice(prefix.length);
      if (key === '@meta') {
        const parsed = parseMeta(kv.value);
        view.meta = { text: kv.value.toString('utf8').slice(0, VALUE_MAX), ...('meta' in parsed ? { parsed: parsed.meta } : { error: parsed.error }) };
        continue;
      }
      const base = { key: printable(key), size: kv.value.length, revision: Number(kv.mod_revision), version: Number(kv.version) };
      if (!sealed) {
        view.keys.push({ ...base, ...text(kv.value) });
        continue;
      }
      let recipients: string[] | undefined;
      try {
        recipients = envelopeRecipients(kv.value).map((fp) => names.get(fp) ?? fp);
      } catch {
        recipients = undefined; // not an envelope: plaintext written by hand, say so, show nothing of it
      }
      view.keys.push({ ...base, sealed: recipients !== undefined, ...(recipients && { recipients }) });
    }
    views.push(view);
  }
  const global = views.find((v) => v.scope === 'global');
  const clusters = model.clusters().map((cluster) => {
    const own = views.find((v) => v.scope === `clusters/${cluster}`);
    const meta = own?.meta?.parsed ?? global?.meta?.parsed;
    const admitted: 'yes' | 'no' | 'depends on the cluster labels' = !placementAdmits(meta && { ...meta, placement: meta.placement && { ...meta.placement, clusterSelector: undefined } }, cluster, {})
      ? 'no'
      : meta?.placement?.clusterSelector
        ? 'depends on the cluster labels'
        : 'yes';
    const from = new Map<string, string>();
    for (const k of global?.keys ?? []) from.set(k.key, 'global');
    for (const k of own?.keys ?? []) from.set(k.key, `clusters/${cluster}`);
    return { cluster, admitted, keys: [...from.entries()].sort().map(([key, scope]) => ({ key, from: scope })) };
  });
  const history: ObjectView['history'] = [];
  for (const scope of scopes) {
    const name = scope.type === 'global' ? 'global' : `clusters/${scope.cluster}`;
    try {
      const h = await readHistory({ client, ks, scope, ref, deadlineMs: 5000 }, 5000);
      history.push({
        scope: name, compactRevision: h.compactRevision, head: h.head,
        revisions: h.revisions.slice(0, 200).map((r) => ({
          revision: r.revision,
          changes: r.changes.map((c) => ({
            key: printable(c.key), op: c.type, beforeSize: c.before?.length, afterSize: c.after?.length,
            ...(!sealed && { before: text(c.before).value, after: text(c.after).value }),
          })),
        })),
      });
    } catch (err) {
      history.push({ scope: name, compactRevision: 0, head: 0, revisions: [], error: printable((err as Error).message) });
    }
  }
  return { id, kind: ref.kind, namespace: ref.namespace, name: ref.name, scopes: views, clusters, history };
}
