import * as k8s from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import type { ReconcileEvent } from '../reconcile/events.js';
import { describeKubeError } from '../sink/kube-leader.js';

/** Workloads opt in with this annotation set to "true". */
export const RESTART_OPT_IN = 'confsync.io/restart-on-change';
/** Set on the pod template to roll the workload, as `kubectl rollout restart` does. */
export const RESTARTED_AT = 'confsync.io/restartedAt';

type Workload = k8s.V1Deployment | k8s.V1StatefulSet | k8s.V1DaemonSet;
type WorkloadKind = 'deployments' | 'statefulsets' | 'daemonsets';

/**
 * Rolling restarts on Kubernetes: after the Kubernetes sink changed a ConfigMap
 * or Secret, every opted-in Deployment/StatefulSet/DaemonSet in its namespace
 * whose pod template uses it (volume, projected volume, envFrom, env valueFrom)
 * gets a new pod-template annotation, and its controller rolls the pods.
 * Changes to several objects within `debounceMs` roll a workload once.
 * A failure is reported and never blocks the sync.
 */
export class KubeRestarts {
  private readonly apps: k8s.AppsV1Api;
  private readonly pending = new Map<string, Set<string>>(); // namespace -> changed object ids
  private timer?: NodeJS.Timeout;

  constructor(
    kubeConfig: k8s.KubeConfig,
    private readonly logger: Logger,
    private readonly debounceMs = 500,
  ) {
    this.apps = kubeConfig.makeApiClient(k8s.AppsV1Api);
  }

  /** A reconcile observer: rolls workloads after the Kubernetes sink changed an object they use. */
  readonly observe = (e: ReconcileEvent): void => {
    if (e.type !== 'written' || e.sink !== 'kubernetes') return;
    const obj = e.object;
    const set = this.pending.get(obj.namespace) ?? new Set();
    set.add(obj.id);
    this.pending.set(obj.namespace, set);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), this.debounceMs);
  };

  async close(): Promise<void> {
    clearTimeout(this.timer);
    await this.flush();
  }

  private async flush(): Promise<void> {
    const batch = [...this.pending];
    this.pending.clear();
    for (const [namespace, ids] of batch) {
      for (const kind of ['deployments', 'statefulsets', 'daemonsets'] as const) {
        try {
          const items = (await this.list(kind, namespace)).filter((w) => w.metadata?.annotations?.[RESTART_OPT_IN] === 'true');
          for (const w of items) {
            const uses = [...ids].filter((id) => templateUses(w.spec?.template, id));
            if (uses.length > 0) await this.restart(kind, w, uses);
          }
        } catch (err) {
          this.logger.warn({ namespace, kind, err: describeKubeError(err) }, 'rolling restart skipped: cannot list or patch workloads');
        }
      }
    }
  }

  private list(kind: WorkloadKind, namespace: string): Promise<Workload[]> {
    if (kind === 'deployments') return this.apps.listNamespacedDeployment({ namespace }).then((l) => l.items);
    if (kind === 'statefulsets') return this.apps.listNamespacedStatefulSet({ namespace }).then((l) => l.items);
    return this.apps.listNamespacedDaemonSet({ namespace }).then((l) => l.items);
  }

  private async restart(kind: WorkloadKind, w: Workload, uses: string[]): Promise<void> {
    const name = w.metadata!.name!;
    const namespace = w.metadata!.namespace!;
    const body = { spec: { template: { metadata: { annotations: { [RESTARTED_AT]: new Date().toISOString() } } } } };
    const options = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
    if (kind === 'deployments') await this.apps.patchNamespacedDeployment({ name, namespace, body }, options);
    else if (kind === 'statefulsets') await this.apps.patchNamespacedStatefulSet({ name, namespace, body }, options);
    else await this.apps.patchNamespacedDaemonSet({ name, namespace, body }, options);
    this.logger.info({ workload: `${kind}/${namespace}/${name}`, because: uses }, 'rolling restart: a ConfigMap or Secret it uses changed');
  }
}

/** Does a pod template reference the object `configmaps/<ns>/<name>` or `secrets/<ns>/<name>`? */
export function templateUses(template: k8s.V1PodTemplateSpec | undefined, id: string): boolean {
  const [kind, , name] = id.split('/');
  const spec = template?.spec;
  if (!spec) return false;
  const isCm = kind === 'configmaps';
  const refs = (ref: { name?: string } | undefined) => ref?.name === name;
  for (const v of spec.volumes ?? []) {
    if (isCm ? refs(v.configMap) : v.secret?.secretName === name) return true;
    for (const s of v.projected?.sources ?? []) if (refs(isCm ? s.configMap : s.secret)) return true;
  }
  for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
    for (const e of c.envFrom ?? []) if (refs(isCm ? e.configMapRef : e.secretRef)) return true;
    for (const e of c.env ?? []) if (refs(isCm ? e.valueFrom?.configMapKeyRef : e.valueFrom?.secretKeyRef)) return true;
  }
  return false;
}
