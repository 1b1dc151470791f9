/**
 * The pinned recipients file: the public keys a writer (an operator's `secret set`,
 * `seal --recipients-file`, `rewrap`) seals to, kept next to the operator, not in etcd.
 *
 *     # confsync-recipients.yaml
 *     clusters:
 *       prod-eu: confsync1…        # the key each cluster's daemon opens with
 *       prod-us: confsync1…
 *     admins:                      # escrow / break-glass keys, sealed to in every scope
 *       - confsync1…
 *
 * WHY A FILE: `PREFIX/recipients/<cluster>` in etcd is where daemons publish their
 * keys, but anyone who can write etcd could swap one for their own and read every
 * secret sealed afterwards. As SOPS and age users do, writers pin keys once, after
 * a human compared the fingerprint, and keep sealing to the pinned key; a changed
 * registration is refused until someone accepts that cluster's new fingerprint
 * (`recipients pull --accept CLUSTER=FINGERPRINT`).
 *
 * RECIPIENT SETS: the `global` scope is sealed to every pinned cluster plus the
 * admins; `clusters/<c>` to cluster c plus the admins (c must be pinned).
 *
 * Edits keep the file's comments and layout (the YAML document is edited in place)
 * and are written atomically (temp file, fsync, rename).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { Document, isMap, parseDocument } from 'yaml';
import { z } from 'zod';
import { UserError } from '../errors.js';
import { clusterError, type Scope } from '../keyspace.js';
import { parseRecipient, type Recipient } from './identity.js';

export const DEFAULT_RECIPIENTS_FILE = './confsync-recipients.yaml';

const shape = z.strictObject({
  clusters: z.record(z.string(), z.string()).nullish(),
  admins: z.array(z.string()).nullish(),
});

export class RecipientsFile {
  private constructor(
    readonly path: string,
    /** Whether the file existed at load (save() creates it otherwise). */
    readonly exists: boolean,
    private readonly doc: Document,
    readonly clusters: Map<string, Recipient>,
    readonly admins: Recipient[],
  ) {}

  /**
   * Reads and validates the file. A missing file is an error unless `missingOk`
   * (then it is empty). Errors are one line naming the file and the field.
   */
  static async load(path: string, options: { missingOk?: boolean } = {}): Promise<RecipientsFile> {
    let text: string;
    try {
      text = await fs.readFile(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && options.missingOk) return new RecipientsFile(path, false, emptyDocument(), new Map(), []);
      if (code === 'ENOENT') throw new UserError(`recipients file ${path} not found: run "confsync recipients pull" to create it, or pass --recipients-file`);
      throw new UserError(`recipients file ${path}: cannot read (${code ?? (err as Error).message})`);
    }
    const doc = parseDocument(text);
    if (doc.errors.length > 0) throw new UserError(`recipients file ${path}: not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
    const parsed = shape.safeParse(doc.toJS() ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : issue.path.join('.') || '(top level)';
      throw new UserError(`recipients file ${path}: ${issue.code === 'unrecognized_keys' ? 'unknown field' : 'field'} ${field}: ${issue.code === 'unrecognized_keys' ? 'expected only clusters and admins' : issue.message}`);
    }
    const clusters = new Map<string, Recipient>();
    for (const [name, text] of Object.entries(parsed.data.clusters ?? {})) {
      const err = clusterError(name);
      if (err) throw new UserError(`recipients file ${path}: clusters.${name}: ${err}`);
      clusters.set(name, field(path, `clusters.${name}`, text));
    }
    const admins = (parsed.data.admins ?? []).map((text, i) => field(path, `admins[${i}]`, text));
    return new RecipientsFile(path, true, doc, clusters, admins);
  }

  /**
   * Who a value in `scope` is sealed to: global = every pinned cluster + admins;
   * clusters/<c> = c + admins. Refuses an unpinned cluster or an empty set.
   */
  forScope(scope: Scope): Recipient[] {
    let list: Recipient[];
    if (scope.type === 'global') {
      list = [...this.clusters.values(), ...this.admins];
    } else {
      const pinned = this.clusters.get(scope.cluster);
      if (!pinned) throw new UserError(`cluster "${scope.cluster}" is not pinned in ${this.path}: run "confsync recipients pull" (it must have registered its key with "confsync keygen --register")`);
      list = [pinned, ...this.admins];
    }
    if (list.length === 0) throw new UserError(`recipients file ${this.path} pins no clusters and no admins: nothing to seal to`);
    // The same key pinned twice (a cluster also listed as admin) is sealed once.
    return [...new Map(list.map((r) => [r.id, r])).values()];
  }

  /** Pins (or re-pins) a cluster's key in memory; `save()` writes it. */
  pin(cluster: string, recipient: Recipient): void {
    const err = clusterError(cluster);
    if (err) throw new UserError(err);
    this.clusters.set(cluster, recipient);
    if (!isMap(this.doc.get('clusters'))) this.doc.set('clusters', this.doc.createNode({}));
    this.doc.setIn(['clusters', cluster], recipient.text);
    if (!this.doc.has('admins')) this.doc.set('admins', this.doc.createNode([]));
  }

  /** Atomic replace; keeps the mode of an existing file (default 0644: public keys, but only the owner may change whom we trust). */
  async save(): Promise<void> {
    const mode = await fs.stat(this.path).then((st) => st.mode & 0o777, () => 0o644);
    const tmp = `${this.path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await fs.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(this.doc.toString());
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fs.rename(tmp, this.path);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw new UserError(`recipients file ${this.path}: cannot write (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const dir = await fs.open(dirname(this.path), 'r');
    await dir.sync().finally(() => dir.close());
  }

  /** The name a fingerprint has in this file (`cluster a`, `admin`), for listings. */
  describe(id: string): string | undefined {
    for (const [name, r] of this.clusters) if (r.id === id) return name;
    if (this.admins.some((r) => r.id === id)) return `admin:${id.slice(0, 8)}`;
    return undefined;
  }
}

function emptyDocument(): Document {
  const doc = new Document({ clusters: {}, admins: [] });
  doc.commentBefore =
    ' confsync pinned recipients: the public keys secrets are sealed to.\n' +
    ' clusters: filled by "confsync recipients pull" after confirming fingerprints.\n' +
    ' admins: escrow/break-glass recipients, added by hand; sealed to in every scope.';
  return doc;
}

function field(path: string, where: string, text: string): Recipient {
  try {
    return parseRecipient(text);
  } catch (err) {
    throw new UserError(`recipients file ${path}: ${where}: ${(err as Error).message}`);
  }
}
