import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import type { DesiredObject } from '../desired/types.js';

/** Ownership marker (external-secrets' habit): nothing without it is ever modified or deleted. */
export const MANAGED_BY = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'confsync';
export const OWNED_SELECTOR = `${MANAGED_BY}=${MANAGED_BY_VALUE}`;
export const ANN_REVISION = 'confsync.io/source-revision';
export const ANN_HASH = 'confsync.io/content-hash';
/** etcd's (and so the API server's) object size ceiling, minus room for metadata. */
export const MAX_DATA_BYTES = 1024 * 1024 - 16 * 1024;

export type KubeObject = V1ConfigMap | V1Secret;

function isUtf8(b: Buffer): boolean {
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

/**
 * The apply body for one desired object. ConfigMap values that are not UTF-8
 * go to binaryData (base64); Secret values are all base64 in `data`.
 * Throws when the payload cannot fit in one Kubernetes object.
 */
export function toKubeObject(obj: DesiredObject): KubeObject {
  let size = 0;
  for (const v of obj.data.values()) size += v.length;
  if (size > MAX_DATA_BYTES) throw new Error(`${obj.id}: ${size} bytes of data is over the ${MAX_DATA_BYTES}-byte limit of a Kubernetes object`);
  const metadata = {
    name: obj.name,
    namespace: obj.namespace,
    labels: { ...obj.labels, [MANAGED_BY]: MANAGED_BY_VALUE },
    annotations: { ...obj.annotations, [ANN_REVISION]: String(obj.revision), [ANN_HASH]: obj.hash },
  };
  const immutable = obj.immutable ? { immutable: true } : {};
  if (obj.kind === 'secrets') {
    const data: Record<string, string> = {};
    for (const [k, v] of obj.data) data[k] = v.toString('base64');
    return { apiVersion: 'v1', kind: 'Secret', metadata, type: obj.type ?? 'Opaque', data, ...immutable };
  }
  const data: Record<string, string> = {};
  const binaryData: Record<string, string> = {};
  for (const [k, v] of obj.data) {
    if (isUtf8(v)) data[k] = v.toString('utf8');
    else binaryData[k] = v.toString('base64');
  }
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata, data, ...(Object.keys(binaryData).length ? { binaryData } : {}), ...immutable };
}

export function isOwned(live: { metadata?: { labels?: Record<string, string> } } | undefined): boolean {
  return live?.metadata?.labels?.[MANAGED_BY] === MANAGED_BY_VALUE;
}

/**
 * Does the live object already hold everything `want` says? Compares the data
 * itself — not just our hash annotation — so a hand edit that kept the
 * annotation is still seen. Labels/annotations others added are left alone;
 * the source-revision annotation alone never forces a write.
 */
export function liveMatches(live: KubeObject, want: KubeObject): boolean {
  const subset = (have: Record<string, string> | undefined, need: Record<string, string> | undefined, skip?: string) =>
    Object.entries(need ?? {}).every(([k, v]) => k === skip || have?.[k] === v);
  const same = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => {
    const ak = Object.keys(a ?? {});
    return ak.length === Object.keys(b ?? {}).length && ak.every((k) => a![k] === b?.[k]);
  };
  if (!subset(live.metadata?.labels, want.metadata?.labels)) return false;
  if (!subset(live.metadata?.annotations, want.metadata?.annotations, ANN_REVISION)) return false;
  if ((live.immutable ?? false) !== (want.immutable ?? false)) return false;
  if (!same(live.data, want.data)) return false;
  if (want.kind === 'Secret') return (live as V1Secret).type === (want as V1Secret).type;
  return same((live as V1ConfigMap).binaryData, (want as V1ConfigMap).binaryData);
}
