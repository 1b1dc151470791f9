/**
 * `confsync rewrap`: re-seal existing secrets to the current pinned recipient
 * set of their scope (rotation; adding or removing clusters or admins). Each
 * write is guarded by the value's mod revision, so a concurrent writer wins and
 * the secret is re-read and retried; readers never see a value they cannot open.
 */
import type { Command } from 'commander';
import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3';
import { EnvelopeError, envelopeRecipients, open, seal } from '../envelope/envelope.js';
import type { Keyring, Recipient } from '../envelope/identity.js';
import { DEFAULT_RECIPIENTS_FILE, RecipientsFile } from '../envelope/recipients-file.js';
import { UserError } from '../errors.js';
import { clusterError, nameError, namespaceError, parseKey, printable, scopePath, type Scope } from '../source/keys.js';
import { prefixEnd } from '../source/etcd-client.js';
import { connect, connectionOptions } from './common.js';
import { identityOption, keyringFrom, recipientsFileOption, scopeFromFlags, type SecretFlags } from './secret-cmd.js';

export function registerRewrap(program: Command): void {
  connectionOptions(
    program
      .command('rewrap')
      .description('re-seal existing secrets to the current pinned recipients of their scope (rotation, adding/removing clusters or admins)')
      .option('--cluster <name>', 'only clusters/<name>/secrets (default: global only)')
      .option('--all', 'global and every clusters/<name> scope found in etcd')
      .option('--under <ns[/name]>', 'only secrets under this namespace or namespace/name')
      .addOption(identityOption())
      .addOption(recipientsFileOption())
      .option('--concurrency <n>', 'secrets in flight', (v) => Number(v), 32),
  ).action(async (flags: RewrapFlags) => {
    if (flags.cluster && flags.all) throw new UserError('--cluster and --all: choose one');
    if (!Number.isInteger(flags.concurrency) || flags.concurrency < 1 || flags.concurrency > 1024) throw new UserError('--concurrency must be an integer 1…1024');
    if (flags.under) {
      const [ns, name, ...rest] = flags.under.replace(/\/+$/, '').split('/');
      const err = rest.length > 0 ? 'expected <namespace> or <namespace>/<name>' : (namespaceError(ns ?? '') ?? (name !== undefined ? nameError(name) : undefined));
      if (err) throw new UserError(`--under: ${err}`);
    }
    const scope = flags.cluster ? scopeFromFlags(flags) : undefined;
    const pinned = await RecipientsFile.load(flags.recipientsFile || DEFAULT_RECIPIENTS_FILE);
    if (scope) pinned.forScope(scope); // an unpinned --cluster fails before any work
    const keyring = await keyringFrom(flags);
    const { etcd, client } = connect(flags);
    try {
      const scopes: Scope[] = scope ? [scope] : [{ type: 'global' }];
      if (flags.all) scopes.push(...(await clusterScopes(client, etcd.prefix)));
      await rewrap({ client, prefix: etcd.prefix, scopes, under: flags.under?.replace(/\/+$/, ''), pinned, keyring, concurrency: flags.concurrency });
    } finally {
      client.close();
      keyring.dispose();
    }
  });
}

/**
 * Cluster names with any key under PREFIX/clusters/, by skip-scan: read one key,
 * then jump past everything under `clusters/<that name>/`. One request per cluster,
 * however many config keys each holds.
 */
async function clusterScopes(client: Etcd3, prefix: string): Promise<Scope[]> {
  const base = `${prefix}/clusters/`;
  const end = prefixEnd(Buffer.from(base));
  const out: Scope[] = [];
  let from: Buffer = Buffer.from(base);
  for (;;) {
    const [key] = await client.getAll().inRange({ start: from, end }).limit(1).keyBuffers();
    if (!key) return out;
    const rest = key.subarray(base.length).toString();
    const slash = rest.indexOf('/');
    if (slash < 0) {
      from = Buffer.concat([key, Buffer.from([0])]);
      continue;
    }
    const name = rest.slice(0, slash);
    if (clusterError(name)) process.stderr.write(`skipping ${printable(`clusters/${name}/`)}: ${printable(clusterError(name)!)}\n`);
    else out.push({ type: 'cluster', cluster: name });
    from = prefixEnd(Buffer.from(`${base}${name}/`));
  }
}

interface RewrapFlags extends SecretFlags {
  all?: boolean;
  under?: string;
  concurrency: number;
}

interface RewrapJob {
  client: Etcd3;
  prefix: string;
  scopes: Scope[];
  under?: string;
  pinned: RecipientsFile;
  keyring: Keyring;
  concurrency: number;
}

/** What happened to one key. Only the first two leave a value sealed to the current set. */
type Outcome = 'rewrapped' | 'unchanged' | 'not-a-recipient' | 'unopenable' | 'not-an-envelope' | 'invalid-key' | 'unpinned' | 'meta' | 'gone' | 'failed';

const OUTCOME_NOTES: Record<Outcome, string> = {
  rewrapped: 're-sealed to the current recipients',
  unchanged: 'already sealed to exactly the current recipients',
  'not-a-recipient': 'skipped: not openable with this identity, which is not among its recipients',
  unopenable: 'skipped: envelope cannot be opened, corrupt, tampered or moved; daemons refuse it too',
  'not-an-envelope': 'skipped: not an envelope, plaintext?; daemons refuse it too',
  'invalid-key': 'skipped: invalid key, daemons ignore it',
  unpinned: 'skipped: its cluster is not pinned in the recipients file',
  meta: '@meta keys, not secrets',
  gone: 'deleted by someone else while rewrapping',
  failed: 'failed (etcd error or kept changing)',
};

/** Outcomes that leave a live secret sealed to an old set: the run exits 1. */
const LEFT_BEHIND: Outcome[] = ['not-a-recipient', 'unpinned', 'failed'];
const MAX_CONFLICT_RETRIES = 20;

/**
 * Re-seals every secret under the selected scopes to `pinned.forScope(scope)`:
 *
 *  (1) count the keys (for progress), then page through each scope's range at head;
 *  (2) per key, `concurrency` in flight: parse the key; if the envelope's stanza
 *      fingerprints already equal the target set, it is unchanged (no open needed);
 *  (3) open with the keyring, seal anew for the same logical path, zero the plaintext;
 *  (4) write in a txn guarded by the mod revision we read: `if Mod == rev then put
 *      else get`. A lost race (someone wrote the key meanwhile) hands back the
 *      current value in the same round trip; go to (2) with it, counting a conflict.
 *      Readers see either the old envelope or the new one, both openable: no downtime.
 */
async function rewrap(job: RewrapJob): Promise<void> {
  const { client, prefix, keyring } = job;
  const targets = new Map<string, { recipients: Recipient[]; ids: Set<string> } | undefined>();
  for (const s of job.scopes) {
    try {
      const recipients = job.pinned.forScope(s);
      targets.set(scopePath(s), { recipients, ids: new Set(recipients.map((r) => r.id)) });
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      process.stderr.write(`warning: ${err.message}; its secrets are skipped\n`);
      targets.set(scopePath(s), undefined);
    }
  }
  const ranges = job.scopes.map((s) => `${prefix}/${scopePath(s)}/secrets/${job.under ? `${job.under}/` : ''}`);
  let total = 0;
  for (const r of ranges) total += await client.getAll().prefix(r).count();

  const counts = Object.fromEntries(Object.keys(OUTCOME_NOTES).map((k) => [k, 0])) as Record<Outcome, number>;
  let conflicts = 0;
  const notes: string[] = [];
  const note = (rel: string, why: string) => {
    if (notes.length < 20) notes.push(`  ${printable(rel)}: ${why}`);
  };

  const one = async (kv: IKeyValue): Promise<Outcome> => {
    const rel = kv.key.toString().slice(prefix.length + 1);
    const parsed = parseKey(rel);
    if (parsed.type === 'meta') return 'meta';
    if (parsed.type !== 'data') {
      note(rel, parsed.type === 'invalid' ? parsed.reason : 'not a secret key');
      return 'invalid-key';
    }
    const target = targets.get(scopePath(parsed.scope));
    if (!target) {
      note(rel, 'cluster not pinned');
      return 'unpinned';
    }
    let { value, mod_revision: rev } = kv;
    for (let attempt = 0; ; attempt++) {
      const skip = (err: unknown): Outcome => {
        if (!(err instanceof EnvelopeError)) throw err;
        note(rel, err.reason);
        return err.reason === 'not-a-recipient' ? 'not-a-recipient' : err.reason === 'not-an-envelope' ? 'not-an-envelope' : 'unopenable';
      };
      let ids: string[];
      try {
        ids = envelopeRecipients(value);
      } catch (err) {
        return skip(err);
      }
      if (ids.length === target.ids.size && new Set(ids).size === ids.length && ids.every((id) => target.ids.has(id))) return 'unchanged';
      let plain: Buffer;
      try {
        plain = await open(value, parsed.logicalPath, keyring);
      } catch (err) {
        return skip(err);
      }
      let envelope: string;
      try {
        envelope = await seal(plain, parsed.logicalPath, target.recipients);
      } finally {
        plain.fill(0);
      }
      const res = await client.if(kv.key, 'Mod', '==', rev).then(client.put(kv.key).value(envelope)).else(client.get(kv.key)).commit();
      if (res.succeeded) return 'rewrapped';
      conflicts++;
      const current = res.responses[0]?.response_range?.kvs[0];
      if (!current) return 'gone';
      if (attempt >= MAX_CONFLICT_RETRIES) {
        note(rel, `changed ${attempt + 1} times while rewrapping; run rewrap again`);
        return 'failed';
      }
      ({ value, mod_revision: rev } = current);
    }
  };

  const progress = new Progress(total, () => `rewrapped ${counts.rewrapped}, unchanged ${counts.unchanged}`);
  const items = kvsIn(client, ranges);
  try {
    const worker = async () => {
      for (let next = await items.next(); !next.done; next = await items.next()) {
        let outcome: Outcome;
        try {
          outcome = await one(next.value);
        } catch (err) {
          // etcd errors name no value; anything else is reported by its message only
          note(next.value.key.toString().slice(prefix.length + 1), (err as Error).message);
          outcome = 'failed';
        }
        counts[outcome]++;
        progress.tick();
      }
    };
    await Promise.all(Array.from({ length: job.concurrency }, worker));
  } finally {
    progress.finish();
  }

  if (notes.length > 0) process.stderr.write(`keys not rewrapped (first ${notes.length}):\n${notes.join('\n')}\n`);
  const secs = progress.elapsedMs() / 1000;
  const lines = (Object.keys(OUTCOME_NOTES) as Outcome[])
    .filter((o) => counts[o] > 0 || o === 'rewrapped' || o === 'unchanged' || o === 'not-a-recipient')
    .map((o) => `${o}: ${counts[o]}\t(${OUTCOME_NOTES[o]})`);
  lines.push(`conflicts-retried: ${conflicts}\t(written by someone else meanwhile: re-read and redone)`);
  lines.push(`elapsed: ${secs.toFixed(2)} s (${Math.round(progress.done / Math.max(secs, 0.001))} keys/s over ${progress.done} keys)`);
  process.stdout.write(`${lines.join('\n')}\n`);
  const behind = LEFT_BEHIND.reduce((n, o) => n + counts[o], 0);
  if (behind > 0) {
    process.stderr.write(`confsync: ${behind} secret(s) are still sealed to their old recipients (see above); do not retire old keys yet\n`);
    process.exitCode = 1;
  }
}

/** Every kv under the ranges, in key order, a page at a time with the next page prefetched. */
async function* kvsIn(client: Etcd3, ranges: string[], pageSize = 256): AsyncGenerator<IKeyValue> {
  for (const r of ranges) {
    const end = prefixEnd(Buffer.from(r));
    const page = (from: Buffer): Promise<IRangeResponse> => client.getAll().inRange({ start: from, end }).limit(pageSize).exec();
    let pending: Promise<IRangeResponse> | undefined = page(Buffer.from(r));
    while (pending) {
      const res: IRangeResponse = await pending;
      const last = res.kvs[res.kvs.length - 1];
      pending = res.more && last ? page(Buffer.concat([last.key, Buffer.from([0])])) : undefined;
      yield* res.kvs;
    }
  }
}

/** Progress on stderr: a bar redrawn in place on a terminal, a line every few seconds otherwise. */
class Progress {
  done = 0;
  private readonly started = Date.now();
  private readonly tty = !!process.stderr.isTTY;
  private readonly timer: NodeJS.Timeout;
  private shown = -1;

  constructor(
    private readonly total: number,
    private readonly detail: () => string,
  ) {
    this.timer = setInterval(() => this.render(), this.tty ? 100 : 2000);
    this.timer.unref();
  }

  tick(): void {
    this.done++;
  }

  elapsedMs(): number {
    return Date.now() - this.started;
  }

  finish(): void {
    clearInterval(this.timer);
    this.render();
    if (this.tty) process.stderr.write('\n');
  }

  private render(): void {
    if (this.done === this.shown && !this.tty) return;
    this.shown = this.done;
    const total = Math.max(this.total, this.done);
    const pct = total === 0 ? 100 : Math.floor((100 * this.done) / total);
    const rate = Math.round(this.done / Math.max(this.elapsedMs() / 1000, 0.001));
    if (this.tty) {
      const width = 24;
      const fill = Math.round((width * pct) / 100);
      process.stderr.write(`\r\x1b[K[${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${this.done}/${total} ${pct}%  ${rate}/s  ${this.detail()}`);
    } else {
      process.stderr.write(`rewrap: ${this.done}/${total} (${pct}%), ${rate}/s, ${this.detail()}\n`);
    }
  }
}
