import type { Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { desiredFromEtcd } from '../admin/desired-state.js';
import { renderOffline } from '../admin/templates.js';
import { createSinks, loadIdentity } from '../daemon.js';
import type { Problem } from '../desired/build.js';
import type { DesiredObject } from '../desired/types.js';
import { printable, type ObjectId } from '../keyspace.js';
import { UserError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ReconcileObserver } from '../reconcile/events.js';
import type { ApplyResult, Sink, SinkKind } from '../sink/types.js';
import { connectionOptions, dial, outputOption, overridesFrom, printStructured } from './common.js';

export interface PlannedChange {
  sink: string;
  action: 'create' | 'update' | 'delete';
  id: ObjectId;
}

/**
 * Wraps a real sink so the reconciler's own path computes the changes while
 * nothing is written: `apply` asks the sink what it would do, `remove` records a
 * delete when the sink owns the object.
 */
export class PlanningSink implements Sink {
  readonly name: SinkKind;
  readonly changes: PlannedChange[] = [];
  private owned?: Set<ObjectId>;

  constructor(private readonly inner: Sink) {
    this.name = inner.name;
  }

  async apply(obj: DesiredObject): Promise<ApplyResult> {
    const action = await this.inner.plan(obj);
    if (action !== 'unchanged') this.changes.push({ sink: this.name, action, id: obj.id });
    return 'unchanged';
  }

  async remove(id: ObjectId): Promise<void> {
    this.owned ??= new Set(await this.inner.list());
    if (this.owned.has(id)) this.changes.push({ sink: this.name, action: 'delete', id });
  }

  plan(obj: DesiredObject) {
    return this.inner.plan(obj);
  }

  list(): Promise<ObjectId[]> {
    return this.inner.list();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export function registerPlan(program: Command): void {
  connectionOptions(program.command('plan').description('show what the daemon would change on this node, changing nothing').addOption(outputOption())).action(async (flags) => {
    if (!flags.config) throw new UserError('plan: --config FILE is required');
    const cfg = loadConfigFile(flags.config, overridesFrom(flags));
    // Problems are printed as lines below (the daemon's own checks, desired/validate.ts), not as JSON logs.
    const logger = createLogger('error', process.stderr);
    const problems: Problem[] = [];
    const observe: ReconcileObserver = (e) => void (e.type === 'problem' && problems.push(e.problem));
    const keyring = await loadIdentity(cfg);
    const sinks = (await createSinks(cfg, logger)).map((s) => new PlanningSink(s));
    const client = dial(cfg.etcd, flags);
    try {
      const { reconciler, revision } = await desiredFromEtcd(cfg, client, logger, keyring, sinks, [observe]);
      const changes = sinks.flatMap((s) => s.changes).sort((a, b) => a.id.localeCompare(b.id));
      // Templates as the daemon would render them: compared with dest, never printed.
      const templates = (await renderOffline(cfg, reconciler, 'allow')).map(({ name, dest, action, error }) => ({ name, dest, action: action ?? 'error', ...(error ? { error } : {}) }));
      if (flags.output !== 'text') {
        const list = problems.map((p) => ({ path: p.path, reason: p.reason }));
        return printStructured(flags.output, { revision, cluster: cfg.cluster, desired: reconciler.desiredObjects().size, changes, problems: list, templates });
      }
      for (const c of changes) process.stdout.write(`${c.action.padEnd(6)} ${c.sink.padEnd(6)} ${c.id}\n`);
      for (const t of templates) process.stdout.write(`${t.action.padEnd(6)} template ${t.name} ${t.dest}${t.error ? `: ${printable(t.error)}` : ''}\n`);
      for (const p of problems) process.stdout.write(`problem ${printable(p.path)}: ${printable(p.reason)}\n`);
      const skipped = problems.length > 0 ? `, ${problems.length} problem(s) (those keep their last good state)` : '';
      const rendered = templates.filter((t) => t.action === 'create' || t.action === 'update').length;
      const tpl = templates.length ? `, ${rendered} of ${templates.length} template(s) would change` : '';
      process.stdout.write(`plan at etcd revision ${revision}: ${changes.length} change(s), ${reconciler.desiredObjects().size} object(s) desired on cluster ${cfg.cluster}${tpl}${skipped}\n`);
    } finally {
      client.close();
      for (const s of sinks) await s.close();
      keyring?.dispose();
    }
  });
}
