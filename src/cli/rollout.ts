/**
 * `confsync rollout start|status|pause|resume|abort|ls`: flags and printing only;
 * the steps are in src/admin/rollout.ts, the record in src/admin/rollout-plan.ts.
 * Exit 0 only when the rollout was promoted; halted, paused or aborted → 1 with
 * the reason on one line. Text output escapes everything read from etcd.
 */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { createRollout, driveRollout, nodesOf, type RolloutEvent } from '../admin/rollout.js';
import { abortRollout, pauseRollout, resumeRollout } from '../admin/rollout-control.js';
import { assignClusters, knownClusters, parseWaves, placedClusters, planRollout } from '../admin/rollout-plan.js';
import { listRollouts, loadRollout, type Rollout } from '../admin/rollout-record.js';
import { parseRef } from '../admin/refs.js';
import { RecipientsFile } from '../envelope/recipients-file.js';
import { OperationFailed, UserError } from '../errors.js';
import { dataKeyError, objectId, printable, rolloutIdError, type Keyspace } from '../keyspace.js';
import type { Etcd3 } from 'etcd3';
import { ALLOW_EMPTY_HELP, connect, connectionOptions, intArg, outputOption, printStructured, recipientsFileOption, refuseEmpty, type ConnectionFlags, type OutputFormat } from './common.js';

interface OutFlags extends ConnectionFlags {
  output: OutputFormat;
  json?: boolean;
}

const collect = (v: string, acc: string[]) => [...acc, v];

function outputOf(flags: OutFlags): OutputFormat {
  if (flags.json && flags.output !== 'text' && flags.output !== 'json') throw new UserError(`--json and -o ${flags.output}: choose one`);
  return flags.json ? 'json' : flags.output;
}

function checkId(id: string): string {
  const err = rolloutIdError(id);
  if (err) throw new UserError(err);
  return id;
}

export function registerRollout(program: Command): void {
  const rollout = program.command('rollout').description('staged rollout of one change: waves of clusters, health gates, promote or abort');
  const verb = (cmd: Command) => connectionOptions(cmd).addOption(outputOption()).option('--json', 'the same as -o json');

  verb(rollout.command('start <ref>').description('roll <namespace>/<name> out in waves: per-cluster overrides wave by wave, then the global keys'))
    .option('--set <key=value>', 'a config key and its new value (repeatable; not with --secret)', collect, [] as string[])
    .option('--file <key=path>', 'a key and the file holding its new value (repeatable)', collect, [] as string[])
    .option('--rm <key>', 'refused: an override cannot hide a global key (see README "Rollouts")', collect, [] as string[])
    .option('--secret', 'the object is a Secret: values are sealed per wave cluster, and to every pinned recipient at promotion')
    .requiredOption('--waves <spec>', "NAME=GLOB[,GLOB];… e.g. 'canary=east-1;eu=eu-*;rest=*' (a cluster joins the first wave that matches it)")
    .option('--gate-seconds <s>', 'after a wave applied, watch its nodes for errors this long', intArg(0, 86_400), 60)
    .option('--max-errors <n>', 'errors tolerated in a wave before the rollout halts', intArg(0, 1_000_000), 0)
    .option('--apply-timeout <s>', 'halt when a live node of a wave has not applied it after this long', intArg(1, 86_400), 60)
    .option('--allow-empty', ALLOW_EMPTY_HELP)
    .addOption(recipientsFileOption())
    .action(async (ref: string, flags: OutFlags & { set: string[]; file: string[]; rm: string[]; secret?: boolean; waves: string; gateSeconds: number; maxErrors: number; applyTimeout: number; allowEmpty?: boolean; recipientsFile: string }) => {
      const output = outputOf(flags);
      if (flags.rm.length > 0) {
        throw new UserError('--rm cannot be staged: a cluster override can replace a global key but not hide it, so no wave could see the key gone; delete it everywhere at once with "confsync config rm" / "secret rm"');
      }
      if (flags.secret && flags.set.length > 0) throw new UserError('--set with --secret: secret values are never taken from the command line (shell history, ps); use --file KEY=PATH');
      const kind = flags.secret ? 'secrets' : 'configmaps';
      const values = await readValues(flags.set, flags.file, flags.allowEmpty);
      const waves = parseWaves(flags.waves);
      const pinned = flags.secret ? await RecipientsFile.load(flags.recipientsFile) : undefined;
      const { ks, client } = connect(flags);
      try {
        const t = parseRef(kind, ref, {}, 2);
        const { placed, excluded } = await placedClusters(client, ks, t.ref, await knownClusters(client, ks));
        const { waves: resolved, unassigned } = assignClusters(waves, placed);
        const r = await planRollout(client, ks, { ref: t.ref, values, waves: resolved, pinned, options: { gateSeconds: flags.gateSeconds, maxErrors: flags.maxErrors, applyTimeoutSeconds: flags.applyTimeout } });
        await createRollout(client, ks, r);
        // With -o json|yaml stdout is the final record alone; the id goes to stderr at once (a pipeline may need it to pause or abort).
        const tell = output === 'text' ? say : (line: string) => process.stderr.write(`${printable(line)}\n`);
        tell(`rollout ${r.id}: ${objectId(r.ref.kind, r.ref.namespace, r.ref.name)} keys ${r.keys.join(', ')} in ${r.waves.length} wave(s): ${r.waves.map((w) => `${w.name} (${w.clusters.join(', ')})`).join('; ')}`);
        if (excluded.length > 0) tell(`note: ${excluded.join(', ')} left out: the object's placement does not admit them`);
        if (unassigned.length > 0) tell(`note: ${unassigned.join(', ')} match no wave: they get the change at promotion`);
        await drive(client, ks, r.id, output);
      } finally {
        client.close();
      }
    });

  verb(rollout.command('resume <id>').description('carry a paused, halted or orphaned (its CLI died) rollout on from its state in etcd')).action(async (id: string, flags: OutFlags) => {
    const output = outputOf(flags);
    const { ks, client } = connect(flags);
    try {
      await resumeRollout(client, ks, checkId(id));
      await drive(client, ks, id, output);
    } finally {
      client.close();
    }
  });

  connectionOptions(rollout.command('pause <id>').description('stop a running rollout where it is (its overrides stay); resume carries on')).action(async (id: string, flags: ConnectionFlags) => {
    const { ks, client } = connect(flags);
    try {
      await pauseRollout(client, ks, checkId(id));
      say(`rollout ${id} paused; the clusters of the waves begun keep the new value (confsync rollout resume ${id} / abort ${id})`);
    } finally {
      client.close();
    }
  });

  verb(rollout.command('abort <id>').description("delete the rollout's overrides in one transaction: every cluster back on the old global value"))
    .option('--timeout <s>', 'wait this long for the nodes to apply the abort', intArg(1, 86_400), 60)
    .action(async (id: string, flags: OutFlags & { timeout: number }) => {
      const output = outputOf(flags);
      const { ks, client } = connect(flags);
      try {
        const a = await abortRollout(client, ks, checkId(id), flags.timeout * 1000);
        if (output !== 'text') return printStructured(output, { ...summary(a.rollout), abortRevision: a.revision, applied: a.applied, nodes: a.nodes, seconds: a.seconds });
        say(`rollout ${id} aborted at revision ${a.revision}: overrides deleted; ${a.applied}/${a.nodes} node(s) of the waves begun applied it in ${a.seconds.toFixed(2)}s`);
      } finally {
        client.close();
      }
    });

  verb(rollout.command('status [id]').description('waves, clusters, nodes (applied/pending/errors), times; default: the newest rollout')).action(async (id: string | undefined, flags: OutFlags) => {
    const output = outputOf(flags);
    const { ks, client } = connect(flags);
    try {
      const r = id ? (await loadRollout(client, ks, checkId(id))).rollout : (await listRollouts(client, ks)).rollouts[0];
      if (!r) throw new UserError('no rollouts under the prefix');
      const nodes = await nodesOf(client, ks, r.waves.flatMap((w) => w.clusters));
      const waves = r.waves.map((w) => {
        const mine = [...nodes].filter(([who]) => w.clusters.includes(who.split('/')[0]!));
        const applied = w.revision === undefined ? 0 : mine.filter(([, s]) => s.revision >= w.revision!).length;
        return { ...w, baseline: undefined, nodes: mine.length, applied, pending: mine.length - applied, withErrors: mine.filter(([, s]) => s.lastError !== undefined).map(([who, s]) => ({ node: who, lastError: s.lastError })) };
      });
      if (output !== 'text') return printStructured(output, { ...summary(r), waves });
      for (const line of describe(r)) say(line);
      const table = [['WAVE', 'CLUSTERS', 'PHASE', 'REVISION', 'APPLIED', 'ERRORS', 'STARTED', 'DONE']];
      for (const w of waves) table.push([w.name, w.clusters.join(','), w.phase, String(w.revision ?? ''), `${w.applied}/${w.nodes}`, w.withErrors.map((e) => `${e.node}: ${e.lastError!.path}: ${e.lastError!.reason}`).join('; '), w.startedAt ?? '', w.doneAt ?? ''].map(printable));
      for (const line of columns(table)) say(line);
    } finally {
      client.close();
    }
  });

  verb(rollout.command('ls').description('every rollout under the prefix, newest first')).action(async (flags: OutFlags) => {
    const output = outputOf(flags);
    const { ks, client } = connect(flags);
    try {
      const { rollouts, skipped } = await listRollouts(client, ks);
      for (const s of skipped) process.stderr.write(`${printable(s)}\n`);
      if (output !== 'text') return printStructured(output, { rollouts: rollouts.map(summary) });
      const table = [['ID', 'OBJECT', 'STATE', 'WAVE', 'CREATED', 'REASON']];
      for (const r of rollouts) table.push([r.id, objectId(r.ref.kind, r.ref.namespace, r.ref.name), r.state, `${Math.min(r.current + 1, r.waves.length)}/${r.waves.length}`, r.createdAt, r.reason ?? ''].map(printable));
      for (const line of columns(table)) say(line);
    } finally {
      client.close();
    }
  });
}

/** One text line; everything in it may come from a record in etcd, so it is escaped whole. */
function say(line: string): void {
  process.stdout.write(`${printable(line)}\n`);
}

function columns(table: string[][]): string[] {
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

/** What a listing shows of a record: never the values (config bytes or envelopes). */
function summary(r: Rollout) {
  const { values: _v, sealed: _s, ...rest } = r;
  return { ...rest, waves: r.waves.map(({ baseline: _b, ...w }) => w) };
}

function describe(r: Rollout): string[] {
  return [
    printable(`rollout ${r.id}: ${objectId(r.ref.kind, r.ref.namespace, r.ref.name)} keys ${r.keys.join(', ')}`),
    printable(`state ${r.state}${r.reason ? ` (${r.reason})` : ''}; wave ${Math.min(r.current + 1, r.waves.length)}/${r.waves.length}; gate ${r.options.gateSeconds}s, max errors ${r.options.maxErrors}, apply timeout ${r.options.applyTimeoutSeconds}s`),
  ];
}

/** --set KEY=VALUE and --file KEY=PATH → key → bytes; keys checked as the daemon checks them. */
async function readValues(sets: string[], files: string[], allowEmpty: boolean | undefined): Promise<Map<string, Buffer>> {
  const values = new Map<string, Buffer>();
  const add = (flag: string, pair: string, value: (rest: string) => Promise<Buffer>) => {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0) throw new UserError(`${flag} "${printable(key)}": expected KEY=${flag === '--set' ? 'VALUE' : 'PATH'}`);
    const err = dataKeyError(key);
    if (err) throw new UserError(`${flag}: ${err}`);
    if (values.has(key)) throw new UserError(`${flag}: key ${key} given twice`);
    return value(pair.slice(eq + 1)).then((v) => {
      refuseEmpty(v, `${flag} ${key}`, allowEmpty);
      values.set(key, v);
    });
  };
  for (const s of sets) await add('--set', s, async (v) => Buffer.from(v));
  for (const f of files) {
    await add('--file', f, (p) =>
      readFile(p).catch((err: NodeJS.ErrnoException) => {
        throw new UserError(`--file ${printable(p)}: cannot read (${err.code ?? err.message})`);
      }),
    );
  }
  if (values.size === 0) throw new UserError('nothing to roll out: give --set KEY=VALUE or --file KEY=PATH');
  return values;
}

/** Drives the rollout, printing progress (text), then the outcome; exit 0 only when promoted. */
async function drive(client: Etcd3, ks: Keyspace, id: string, output: OutputFormat): Promise<void> {
  const tty = process.stdout.isTTY === true;
  let r0: Rollout | undefined;
  const name = (i: number) => (r0 ? `wave ${i + 1}/${r0.waves.length} ${r0.waves[i]?.name}` : `wave ${i + 1}`);
  r0 = (await loadRollout(client, ks, id)).rollout;
  const onEvent = (e: RolloutEvent) => {
    if (output !== 'text') return;
    if (e.type === 'wrote') say(printable(`${name(e.wave)}: overrides written to ${r0!.waves[e.wave]?.clusters.join(', ')} at revision ${e.revision}`));
    else if (e.type === 'applying') say(`${name(e.wave)}: nodes applied ${e.applied}/${e.nodes}${e.errors ? `, errors ${e.errors}` : ''}`);
    else if (e.type === 'gate' && (tty || e.secondsLeft % 10 === 0)) say(`${name(e.wave)}: gate ${e.secondsLeft}s left, errors ${e.errors}/${r0!.options.maxErrors} tolerated`);
    else if (e.type === 'wave-done') say(`${name(e.wave)}: done in ${e.seconds.toFixed(2)}s`);
    else if (e.type === 'promoted') say(`promoted at revision ${e.revision}: global keys set and overrides deleted in one transaction`);
    else if (e.type === 'settled') say(`${e.applied}/${e.nodes} live node(s) applied revision ${e.revision} in ${e.seconds.toFixed(2)}s`);
  };
  // Ctrl-C leaves the record as it is (running, no CLI driving it): say how to pick it up.
  const onInterrupt = () => {
    process.stderr.write(`\nconfsync: interrupted; rollout ${id} stays where it is in etcd, with no CLI driving it: confsync rollout resume ${id} (or pause/abort ${id})\n`);
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  const r = await driveRollout(client, ks, id, { onEvent }).finally(() => process.off('SIGINT', onInterrupt));
  if (output !== 'text') printStructured(output, summary(r));
  if (r.state === 'promoted') {
    if (output === 'text') say(`rollout ${id} promoted`);
    return;
  }
  const next = r.state === 'aborted' ? '' : r.conflict ? `; confsync rollout abort ${id}` : `; confsync rollout resume ${id} or abort ${id}`;
  throw new OperationFailed(`rollout ${id} ${r.state}: ${r.reason ?? 'no reason recorded'}${next}`);
}
