import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';
import { OBJECT_KINDS } from './keyspace.js';
import type { ReconcileEvent } from './reconcile/events.js';
import type { Reconciler } from './reconcile/reconciler.js';
import { UserError } from './errors.js';

/**
 * Prometheus metrics (`confsync_` prefix) and the health endpoints. Labels carry
 * sink names, object kinds and error classes — never paths or values, so a
 * secret's name cannot leak through a label and cardinality stays bounded.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly appliedRevision = new Gauge({ name: 'confsync_applied_revision', help: 'Last etcd revision whose changes every sink has been handed.', registers: [this.registry] });
  readonly headRevision = new Gauge({ name: 'confsync_etcd_revision', help: "etcd's head revision as last seen by the watch.", registers: [this.registry] });
  readonly watchLag = new Gauge({ name: 'confsync_watch_lag_revisions', help: 'etcd head revision minus applied revision.', registers: [this.registry] });
  readonly applyLatency = new Histogram({
    name: 'confsync_apply_latency_seconds',
    help: 'From the watch event arriving to the sink having written the object (etcd put → watch adds ~1 ms, see docs/BENCHMARKS.md).',
    labelNames: ['sink'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly writes = new Counter({ name: 'confsync_writes_total', help: 'Objects written (created or changed) per sink.', labelNames: ['sink'], registers: [this.registry] });
  readonly removals = new Counter({ name: 'confsync_removals_total', help: 'Objects removed per sink.', labelNames: ['sink'], registers: [this.registry] });
  readonly invalidInputs = new Counter({ name: 'confsync_invalid_inputs_total', help: 'Distinct invalid keys or @meta values seen (skipped, last good kept).', registers: [this.registry] });
  readonly decryptFailures = new Counter({ name: 'confsync_decrypt_failures_total', help: 'Distinct secret values that did not open (last good kept).', registers: [this.registry] });
  readonly sinkErrors = new Counter({ name: 'confsync_sink_errors_total', help: 'Failed sink operations (retried with backoff unless the input is invalid).', labelNames: ['sink'], registers: [this.registry] });
  readonly held = new Gauge({ name: 'confsync_deletes_held', help: 'Object removals held by the mass-delete guard until `confsync release`.', registers: [this.registry] });
  readonly failing = new Gauge({ name: 'confsync_objects_failing', help: 'Objects a sink is currently failing on (retried with backoff).', registers: [this.registry] });
  readonly reconnects = new Counter({ name: 'confsync_etcd_reconnects_total', help: 'Times the etcd watch had to back off and reconnect.', registers: [this.registry] });
  readonly relists = new Counter({ name: 'confsync_etcd_relists_total', help: 'Full re-lists of the watched prefixes (start-up and compaction).', registers: [this.registry] });
  readonly startMode = new Counter({
    name: 'confsync_start_mode_total',
    help: 'How the daemon started: "snapshot-resume" (watch resumed from the local snapshot, no list), "list", or "offline" (served from the local snapshot while etcd did not answer; then one of the others).',
    labelNames: ['mode'],
    registers: [this.registry],
  });
  readonly snapshotWrite = new Histogram({
    name: 'confsync_snapshot_write_seconds',
    help: 'Time to seal and write the local snapshot: kind="full" (every key, atomic rename) or "journal" (one record of the changes since, appended and fdatasynced).',
    labelNames: ['kind'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly objects = new Gauge({ name: 'confsync_objects', help: 'Desired objects on this cluster, by kind.', labelNames: ['kind'], registers: [this.registry] });
  readonly ready = new Gauge({ name: 'confsync_ready', help: '1 when /readyz would answer 200.', registers: [this.registry] });
  /** Set by the daemon: the hooks' own counters, read at scrape time. */
  hookCounters?: { runs: readonly number[]; failures: readonly number[] };
  /** Set by the daemon: the file sink's updates prepared ahead (FileSink.preparedCounts), read at scrape time. */
  preparedCounts?: () => { swapped: number; discarded: number };
  /** Set by the daemon: each template's results (render/renderer.ts), read at scrape time. */
  templateCounters?: ReadonlyMap<string, Readonly<Record<string, number>>>;

  constructor() {
    // confsync_process_cpu_seconds_total, … The event-loop lag histogram samples every 100 ms,
    // not prom-client's 10: a native timer waking the process 100 times a second was a third
    // of an idle daemon's CPU (0.5 % of a core here); a stall still shows at 100 ms sampling.
    collectDefaultMetrics({ register: this.registry, prefix: 'confsync_', eventLoopMonitoringPrecision: 100 });
    const metrics = this;
    new Counter({
      name: 'confsync_hook_runs_total',
      help: 'Hook runs (after files were swapped), by hook index and result.',
      labelNames: ['hook', 'result'],
      registers: [this.registry],
      collect() {
        this.reset();
        const c = metrics.hookCounters;
        c?.runs.forEach((runs, hook) => {
          const failed = c.failures[hook] ?? 0;
          this.inc({ hook: String(hook), result: 'ok' }, runs - failed);
          this.inc({ hook: String(hook), result: 'failed' }, failed);
        });
      },
    });
  }

  private preparedMetric = new Counter({
    name: 'confsync_prepared_updates_total',
    help: 'File sink updates whose payload dir was written ahead, while the watch held the change for ordering: result="swapped" (the apply only swapped it in) or "discarded" (the applied state differed, or none came).',
    labelNames: ['result'],
    registers: [this.registry],
    collect: () => {
      this.preparedMetric.reset();
      const c = this.preparedCounts?.();
      if (c) for (const [result, n] of Object.entries(c)) this.preparedMetric.inc({ result }, n);
    },
  });

  private templateMetric = new Counter({
    name: 'confsync_template_renders_total',
    help: 'Template renders by template name and result: written, unchanged (identical bytes), failed (old file kept), waiting (missing: keep), reloadFailed.',
    labelNames: ['template', 'result'],
    registers: [this.registry],
    collect: () => {
      this.templateMetric.reset();
      for (const [template, counts] of this.templateCounters ?? []) for (const [result, n] of Object.entries(counts)) this.templateMetric.inc({ template, result }, n);
    },
  });

  /** A reconcile observer. */
  readonly observe = (e: ReconcileEvent): void => {
    if (e.type === 'written') {
      this.writes.inc({ sink: e.sink });
      if (e.dirtySince !== undefined) this.applyLatency.observe({ sink: e.sink }, (performance.now() - e.dirtySince) / 1000);
    } else if (e.type === 'removed') this.removals.inc({ sink: e.sink });
    else if (e.type === 'problem') (e.counter === 'invalidInputs' ? this.invalidInputs : this.decryptFailures).inc();
    else if (e.type === 'sinkError') this.sinkErrors.inc({ sink: e.sink });
  };

  /** Refresh the gauges that are read from the loop's state rather than pushed. */
  sample(reconciler: Reconciler): void {
    const p = reconciler.progress;
    this.appliedRevision.set(p.applied);
    this.headRevision.set(p.head);
    this.watchLag.set(p.lag());
    this.failing.set(reconciler.failing());
    this.held.set(reconciler.heldDeletes()?.count ?? 0);
    const byKind = Object.fromEntries(OBJECT_KINDS.map((k) => [k, 0]));
    for (const obj of reconciler.desiredObjects().values()) byKind[obj.kind]!++;
    for (const [kind, n] of Object.entries(byKind)) this.objects.set({ kind }, n);
  }
}

export interface Health {
  /** Why the daemon is not ready, or undefined when it is. */
  notReady(): string | undefined;
}

/** /metrics, /healthz (the process serves), /readyz (first full sync done and the watch not stalled). */
export async function serveMetrics(listen: string, metrics: Metrics, health: Health, refresh: () => void, logger: Logger): Promise<http.Server> {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(i + 1));
  const server = http.createServer(async (req, res) => {
    try {
      if (req.url === '/metrics') {
        refresh();
        const body = await metrics.registry.metrics();
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body);
      } else if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (req.url === '/readyz') {
        const why = health.notReady();
        metrics.ready.set(why ? 0 : 1);
        res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain' }).end(why ? `not ready: ${why}\n` : 'ready\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics, /healthz or /readyz\n');
      }
    } catch (err) {
      logger.warn({ err: (err as Error).message, url: req.url }, 'metrics endpoint failed');
      res.writeHead(500).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new UserError(`field metrics.listen: cannot listen on ${listen} (${err.code ?? err.message})`)));
    server.listen(port, host, () => resolve());
  });
  return server;
}
