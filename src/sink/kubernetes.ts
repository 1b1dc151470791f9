import * as k8s from '@kubernetes/client-node';
import type { DesiredObject } from '../desired/types.js';
import type { ObjectId, ObjectKind } from '../keyspace.js';
import { InvalidInput } from '../errors.js';
import { KINDS, objectId } from '../keyspace.js';
import type { Logger } from '../log.js';
import type { ApplyResult, Sink } from './types.js';
import { describeKubeError } from './kube-leader.js';
export { coordinationApi, kubeConfigFor } from './kube-config.js';
import { OWNED_SELECTOR, isOwned, liveMatches, toKubeObject, type KubeObject } from './kube-objects.js';

export interface KubernetesSinkOptions {
  kubeConfig: k8s.KubeConfig;
  fieldManager: string;
  /** Create a missing namespace instead of reporting it. */
  createNamespaces: boolean;
  logger: Logger;
  /** Writes happen only while this is true (the elected leader). Default: always. */
  isActive?: () => boolean;
}

/** Versions of our own writes remembered (oldest dropped first): a dropped one only costs one extra check. */
const WRITTEN_MAX = 4096;
const WRITTEN_PER_OBJECT = 4;

/**
 * ConfigMaps and Secrets in the local cluster, by server-side apply under one
 * field manager. Ownership: the `app.kubernetes.io/managed-by: confsync` label;
 * an object without it is reported and never modified or deleted.
 *
 *  (1) compare with the live object (informer cache of owned objects, or a GET):
 *      unowned → refuse; equal data/labels/annotations → nothing to do;
 *  (2) an immutable live object whose content must change, or a Secret whose
 *      type changes, is deleted first
 *      (Kubernetes forbids updating it, and kubelets cache it until pods restart);
 *  (3) server-side apply with force (we are the only manager of these fields);
 *      a missing namespace is created when configured, else reported;
 *  (4) removals delete only owned objects, guarded by uid + resourceVersion;
 *  (5) informers on owned ConfigMaps/Secrets report hand edits and deletes as
 *      drift, which the reconciler answers by re-applying (≈ one round trip).
 */
export class KubernetesSink implements Sink {
  readonly name = 'kubernetes';
  private readonly core: k8s.CoreV1Api;
  private readonly informers: k8s.Informer<KubeObject>[] = [];
  private readonly caches = new Map<ObjectKind, k8s.ObjectCache<KubeObject>>();
  private readonly synced = new Set<ObjectKind>();
  /**
   * Object -> the resourceVersions its last applies by us returned. The informer
   * then delivers those same versions: no drift, so not a second reconcile of the
   * object (both sinks) after every write. Any other version (a hand edit, another
   * manager, a write of ours whose event came before its response) is reported.
   */
  private readonly written = new Map<ObjectId, string[]>();
  /** Object -> our apply of it under way (its watch event waits for its response: see `written`). */
  private readonly writing = new Map<ObjectId, Promise<void>>();
  private closed = false;

  constructor(private readonly opts: KubernetesSinkOptions) {
    this.core = opts.kubeConfig.makeApiClient(k8s.CoreV1Api);
  }

  private get active(): boolean {
    return this.opts.isActive?.() ?? true;
  }

  async apply(obj: DesiredObject): Promise<ApplyResult> {
    if (!this.active) return 'unchanged';
    const bytes = [...obj.data.values()].reduce((n, v) => n + v.length, 0);
    if (bytes > KUBE_OBJECT_MAX_BYTES) {
      throw new InvalidInput(obj.id, `${bytes} bytes of data: Kubernetes caps a ${KINDS[obj.kind].kubeKind} at 1 MiB; not written to the cluster (files are)`);
    }
    const want = toKubeObject(obj);
    let live = await this.live(obj.kind, obj.namespace, obj.name); // (1)
    if (live && !isOwned(live)) throw new Error(`${kindName(obj.kind)} ${obj.namespace}/${obj.name} exists and is not managed by confsync (no ${OWNED_SELECTOR} label); left alone`);
    if (live && liveMatches(live, want)) return 'unchanged';
    // A Secret's type cannot change in place either: the API server refuses it for ever.
    const typeChanged = live !== undefined && 'type' in want && (live as { type?: string }).type !== want.type;
    if (live && (live.immutable || typeChanged)) {
      // (2)
      await this.delete(obj.kind, live);
      this.opts.logger.info({ object: obj.id }, typeChanged ? 'Secret type changed in etcd: deleted and re-created' : 'immutable object changed in etcd: deleted and re-created (pods using it must restart to see it)');
      live = undefined;
    }
    try {
      await this.ssa(obj.kind, want); // (3)
    } catch (err) {
      if (!isMissingNamespace(err)) throw new Error(`${obj.id}: ${describeKubeError(err)}`);
      if (!this.opts.createNamespaces) throw new Error(`${obj.id}: namespace "${obj.namespace}" does not exist (create it, or set sinks.kubernetes.createNamespaces)`);
      await this.core.createNamespace({ body: { metadata: { name: obj.namespace, labels: { 'app.kubernetes.io/managed-by': 'confsync' } } } }).catch((e) => {
        if (!(e instanceof k8s.ApiException && e.code === 409)) throw new Error(`${obj.id}: cannot create namespace: ${describeKubeError(e)}`);
      });
      await this.ssa(obj.kind, want);
    }
    return 'written';
  }

  async plan(obj: DesiredObject): Promise<'create' | 'update' | 'unchanged'> {
    const want = toKubeObject(obj);
    const live = await this.live(obj.kind, obj.namespace, obj.name);
    if (!live) return 'create';
    if (!isOwned(live)) throw new Error(`${kindName(obj.kind)} ${obj.namespace}/${obj.name} exists and is not managed by confsync; it would be left alone`);
    return liveMatches(live, want) ? 'unchanged' : 'update';
  }

  async remove(id: ObjectId): Promise<void> {
    if (!this.active) return;
    const [kind, namespace, name] = id.split('/') as [ObjectKind, string, string];
    const live = await this.live(kind, namespace, name);
    if (!live || !isOwned(live)) return; // (4) never touch what is not ours
    await this.delete(kind, live);
  }

  async list(): Promise<ObjectId[]> {
    if (!this.active) return [];
    const ids: ObjectId[] = [];
    for (const kind of ['configmaps', 'secrets'] as const) {
      const items = this.synced.has(kind)
        ? this.caches.get(kind)!.list()
        : (kind === 'configmaps'
            ? await this.core.listConfigMapForAllNamespaces({ labelSelector: OWNED_SELECTOR })
            : await this.core.listSecretForAllNamespaces({ labelSelector: OWNED_SELECTOR })
          ).items;
      for (const o of items) if (isOwned(o)) ids.push(objectId(kind, o.metadata!.namespace!, o.metadata!.name!));
    }
    return ids.sort();
  }

  /**
   * The resync's cheap pass (Sink.suspects): compared with the informer cache in
   * memory, no API call; an object is a suspect when the cache is not synced or
   * its live copy is missing, not ours or different. A non-leader has nothing to do.
   */
  async suspects(objects: Iterable<DesiredObject>): Promise<ObjectId[]> {
    if (!this.active) return [];
    const out: ObjectId[] = [];
    let n = 0;
    for (const obj of objects) {
      const live = this.synced.has(obj.kind) ? this.caches.get(obj.kind)!.get(obj.name, obj.namespace) : undefined;
      if (!live || !isOwned(live) || !liveMatches(live, toKubeObject(obj))) out.push(obj.id);
      if (++n % 256 === 0) await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  /** (5) */
  async watchDrift(onDrift: (id: ObjectId) => void): Promise<void> {
    for (const kind of ['configmaps', 'secrets'] as const) {
      const list = () =>
        (kind === 'configmaps'
          ? this.core.listConfigMapForAllNamespaces({ labelSelector: OWNED_SELECTOR })
          : this.core.listSecretForAllNamespaces({ labelSelector: OWNED_SELECTOR })) as Promise<k8s.KubernetesListObject<KubeObject>>;
      const informer = k8s.makeInformer<KubeObject>(this.opts.kubeConfig, `/api/v1/${kind}`, list, OWNED_SELECTOR);
      const report = (o: KubeObject, change: 'update' | 'delete') => {
        if (!this.active || !o.metadata?.namespace || !o.metadata.name) return;
        const id = objectId(kind, o.metadata.namespace, o.metadata.name);
        const rv = o.metadata.resourceVersion;
        // Our own apply coming back: a version one of its responses named is no drift.
        const judge = () => (change === 'update' && rv !== undefined && this.written.get(id)?.includes(rv) ? undefined : onDrift(id));
        // The event can come before the response of the write that made it: judged once that is in.
        const writing = this.writing.get(id);
        if (writing) void writing.then(judge, judge);
        else judge();
      };
      informer.on('update', (o) => report(o, 'update'));
      informer.on('delete', (o) => report(o, 'delete'));
      informer.on('connect', () => this.synced.add(kind));
      informer.on('error', (err) => {
        this.synced.delete(kind);
        if (this.closed) return;
        this.opts.logger.warn({ err: describeKubeError(err), kind }, 'Kubernetes watch failed; re-listing in 1 s');
        setTimeout(() => !this.closed && informer.start().catch(() => undefined), 1000).unref();
      });
      this.informers.push(informer);
      this.caches.set(kind, informer);
      await informer.start().catch((err) => this.opts.logger.warn({ err: describeKubeError(err), kind }, 'Kubernetes watch not started; retrying'));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const i of this.informers) await i.stop().catch(() => undefined);
  }

  private async live(kind: ObjectKind, namespace: string, name: string): Promise<KubeObject | undefined> {
    if (this.synced.has(kind)) {
      const cached = this.caches.get(kind)!.get(name, namespace);
      if (cached) return cached;
    }
    try {
      return kind === 'configmaps'
        ? await this.core.readNamespacedConfigMap({ name, namespace })
        : await this.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw new Error(`${kind}/${namespace}/${name}: cannot read: ${describeKubeError(err)}`);
    }
  }

  private async ssa(kind: ObjectKind, body: KubeObject): Promise<void> {
    const { name, namespace } = body.metadata as { name: string; namespace: string };
    const id = objectId(kind, namespace, name);
    const write = this.applyPatches(id, kind, body);
    this.writing.set(id, write);
    try {
      await write;
    } finally {
      if (this.writing.get(id) === write) this.writing.delete(id);
    }
  }

  /** (3) */
  private async applyPatches(id: ObjectId, kind: ObjectKind, body: KubeObject): Promise<void> {
    const { name, namespace } = body.metadata as { name: string; namespace: string };
    const params = { name, namespace, body, fieldManager: this.opts.fieldManager, force: true };
    const options = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply);
    const live: KubeObject =
      kind === 'configmaps' ? await this.core.patchNamespacedConfigMap(params, options) : await this.core.patchNamespacedSecret(params, options);
    this.noteWritten(id, live);
    // Apply never removes fields another manager owns, so data keys added by hand
    // survive it; drop them with a merge patch (null deletes a map key).
    const strays = (field: 'data' | 'binaryData') => {
      const want = (body as Record<string, any>)[field] ?? {};
      const extra = Object.keys((live as Record<string, any>)[field] ?? {}).filter((k) => !(k in want));
      return extra.length ? { [field]: Object.fromEntries(extra.map((k) => [k, null])) } : {};
    };
    const patch = { ...strays('data'), ...strays('binaryData') };
    if (Object.keys(patch).length === 0) return;
    const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
    const p = { name, namespace, body: patch, fieldManager: this.opts.fieldManager };
    this.noteWritten(id, kind === 'configmaps' ? await this.core.patchNamespacedConfigMap(p, merge) : await this.core.patchNamespacedSecret(p, merge));
  }

  /** The resourceVersion our write left (its watch event is not drift): the last few per object, for WRITTEN_MAX objects. */
  private noteWritten(id: ObjectId, live: KubeObject): void {
    const rv = live.metadata?.resourceVersion;
    if (rv === undefined) return;
    // Writes in a row: an event can come after the next write's response, so one version is not enough.
    const rvs = [...(this.written.get(id) ?? []).slice(-(WRITTEN_PER_OBJECT - 1)), rv];
    this.written.delete(id); // re-inserted last: the oldest-written object goes first
    this.written.set(id, rvs);
    if (this.written.size > WRITTEN_MAX) this.written.delete(this.written.keys().next().value!);
  }

  private async delete(kind: ObjectKind, live: KubeObject): Promise<void> {
    const { name, namespace, uid, resourceVersion } = live.metadata as { name: string; namespace: string; uid: string; resourceVersion: string };
    const body = { preconditions: { uid, resourceVersion } };
    try {
      if (kind === 'configmaps') await this.core.deleteNamespacedConfigMap({ name, namespace, body });
      else await this.core.deleteNamespacedSecret({ name, namespace, body });
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return;
      throw new Error(`${kind}/${namespace}/${name}: cannot delete: ${describeKubeError(err)}`);
    }
  }
}

function kindName(kind: ObjectKind): string {
  return KINDS[kind].kubeKind;
}

/** The API server refuses a ConfigMap or Secret whose data exceeds 1 MiB. */
const KUBE_OBJECT_MAX_BYTES = 1024 * 1024;

function isMissingNamespace(err: unknown): boolean {
  if (!(err instanceof k8s.ApiException) || err.code !== 404) return false;
  try {
    return JSON.parse(err.body as string)?.details?.kind === 'namespaces';
  } catch {
    return false;
  }
}
