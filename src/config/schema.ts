import os from 'node:os';
import { z } from 'zod';
import { clusterError, templateNameError } from '../keyspace.js';
import { DEFAULT_STATE_DIR, isInside } from '../state/location.js';

/**
 * The daemon's configuration, declared once: name, type, default and description
 * side by side (Renovate's habit). `config.example.yaml` mirrors this file and a
 * test loads it through the real loader. Unknown fields are refused (strict).
 */

const dnsLabel = z.string().refine((s) => !clusterError(s), { message: 'must be a DNS-1123 label (lowercase letters, digits, "-", at most 63)' });
/**
 * File modes are quoted octal strings ("0644", "0400"). Numbers are refused: a
 * bare 0400 is decimal 400 in YAML 1.2 (= 0o620), which would silently be wrong.
 */
const mode = z
  .string({ error: 'must be a quoted octal mode like "0644" (a bare 0644 is a decimal number in YAML)' })
  .regex(/^0?[0-7]{3}$/, 'must be an octal mode like "0644"')
  .transform((s) => parseInt(s, 8));

const files = z.strictObject({
  root: z.string().min(1).describe('Root of the projection: <root>/configmaps/<ns>/<name>/<key>.'),
  secretsRoot: z.string().min(1).optional().describe('Where secrets go (default <root>/secrets). Put it on tmpfs, e.g. under /run.'),
  configFileMode: mode.prefault('0644').describe('Mode of config files.'),
  secretFileMode: mode.prefault('0400').describe('Mode of secret files.'),
  uid: z.number().int().min(0).optional().describe('Owner of written files and object dirs (default: the daemon user).'),
  gid: z.number().int().min(0).optional().describe('Group of written files and object dirs.'),
});

/** `host:port` or `[v6]:port` with no scheme (etcdctl's form). Linear: no nested quantifiers. */
const BARE_ENDPOINT = /^(\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9.]+):[0-9]{1,5}$/;
const ENDPOINT_ERROR = 'must be host:port or an http(s)://host:port URL, without a path';
const endpoint = z.union(
  [z.string().regex(BARE_ENDPOINT), z.url({ protocol: /^https?$/ }).regex(/^https?:\/\/[^/?#]+\/?$/i)],
  { error: ENDPOINT_ERROR },
);

const templateName = z.string().superRefine((s, ctx) => {
  const err = templateNameError(s);
  if (err) ctx.addIssue({ code: 'custom', message: err });
});

/** One rendered file (README "Templates"; render/). Whether it may read secrets is checked at start (render/load.ts). */
const template = z
  .strictObject({
    name: templateName.describe('Names the template in logs, metrics and `confsync template render --name` (DNS-1123 label).'),
    source: z.string().min(1).optional().describe('A Liquid template file on this host, read at start.'),
    etcd: templateName.optional().describe('Or: a template stored under PREFIX/<scope>/templates/<name>; the cluster scope overrides global. It syncs like any key.'),
    dest: z
      .string()
      .regex(/^\/[^\0]*[^/]$/, 'must be an absolute file path (only this config chooses where files go, never etcd)')
      .describe(
        'The file written (temp file beside it, fsync, rename); with destFile, the directory confsync manages kubelet-style (..data swap). Secrets may be read only where dest is under the secrets root or mode is "0600"/"0400".',
      ),
    destFile: z
      .string()
      .regex(/^[-._a-zA-Z0-9]{1,253}$/, 'must be a plain file name: letters, digits, "-", "_", "." (no "/"), at most 253')
      .refine((s) => s !== '.' && !s.startsWith('..'), { message: 'must not be "." or start with ".." (names starting with ".." are the directory\'s own)' })
      .optional()
      .describe('Makes dest a directory: the file <dest>/<destFile> is a link into a payload dir swapped atomically via <dest>/..data, check running against the new payload before the swap.'),
    mode: mode.prefault('0644').describe('Mode of the written file.'),
    owner: z.number().int().min(0).optional().describe('Owner uid of the written file (default: the daemon user).'),
    group: z.number().int().min(0).optional().describe('Group gid of the written file.'),
    check: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe('argv run (no shell) before the swap with $CONFSYNC_RENDERED_FILE set to the new file; non-zero or timeout keeps the old file and reports the error.'),
    checkTimeoutSeconds: z.number().positive().prefault(30).describe('A check running longer is killed and counts as failed.'),
    reload: z
      .strictObject({
        command: z.array(z.string().min(1)).min(1).optional().describe('argv run (no shell) after the new file is in place.'),
        signal: z
          .strictObject({ pidFile: z.string().min(1), name: z.string().regex(/^SIG[A-Z0-9]+$/, 'must be a signal name like SIGHUP').prefault('SIGHUP') })
          .optional()
          .describe('Or: signal the process whose pid is in pidFile.'),
        timeoutSeconds: z.number().positive().prefault(30).describe('A command running longer is killed and reported.'),
      })
      .refine((h) => !!h.command !== !!h.signal, { message: 'give exactly one of command or signal' })
      .optional()
      .describe('Run after the file changed (as a hook is).'),
    missing: z
      .enum(['error', 'empty', 'keep'])
      .prefault('error')
      .describe('A variable, object or key the template reads is absent: error = report, keep the old file; empty = render it as ""; keep = keep the old file quietly until it appears.'),
  })
  .refine((t) => !!t.source !== !!t.etcd, { message: 'give exactly one of source or etcd' });

export const configSchema = z.strictObject({
  cluster: dnsLabel.describe("This cluster's name; selects PREFIX/clusters/<cluster>/ overrides."),
  node: z.string().min(1).prefault(os.hostname()).describe('This node; names the status key. Defaults to the hostname.'),
  labels: z.record(z.string(), z.string()).prefault({}).describe('Matched by @meta placement.clusterSelector.'),
  etcd: z
    .strictObject({
      // host:port only: a path, query or fragment would be silently ignored by the client.
      // A bare host:port is accepted as etcdctl accepts it (https:// when etcd.tls is set).
      endpoints: z.array(endpoint).min(1).prefault(['http://127.0.0.1:2379']),
      prefix: z
        .string()
        .regex(/^\/[^\0]*[^/]$/, 'must start with "/" and not end with "/"')
        .prefault('/confsync'),
      tls: z.strictObject({ ca: z.string().optional(), cert: z.string().optional(), key: z.string().optional() }).optional(),
      auth: z.strictObject({ username: z.string().min(1), passwordFile: z.string().min(1) }).optional(),
    })
    .overwrite((etcd) => ({ ...etcd, endpoints: etcd.endpoints.map((e) => (BARE_ENDPOINT.test(e) ? `${etcd.tls ? 'https' : 'http'}://${e}` : e)) }))
    .prefault({}),
  identity: z.string().min(1).optional().describe('Private key file (0600) used to open secrets sealed to this cluster.'),
  sinks: z
    .strictObject({
      files: files.optional().describe('Omit to disable the file sink.'),
      kubernetes: z
        .strictObject({
          enabled: z.boolean().prefault(false),
          kubeconfig: z.string().min(1).optional().describe('Path to a kubeconfig; in-cluster config when omitted.'),
          fieldManager: z.string().min(1).prefault('confsync').describe('Server-side apply field manager.'),
          createNamespaces: z.boolean().prefault(false).describe('Create a missing namespace instead of reporting it (needs RBAC on namespaces).'),
          rollingRestarts: z
            .boolean()
            .prefault(true)
            .describe('Roll Deployments/StatefulSets/DaemonSets annotated confsync.io/restart-on-change: "true" when a ConfigMap or Secret they use changes.'),
          leaderElection: z
            .strictObject({
              enabled: z.boolean().prefault(true).describe('Only the holder of a coordination.k8s.io Lease writes objects (one writer per cluster).'),
              namespace: z.string().min(1).prefault('confsync').describe('Namespace of the Lease (the DaemonSet\'s own).'),
              name: z.string().min(1).optional().describe('Lease name; default confsync-<cluster>.'),
              leaseDurationSeconds: z.number().int().min(2).prefault(15),
              renewSeconds: z.number().positive().prefault(5),
            })
            .prefault({}),
        })
        .optional()
        .describe('ConfigMaps and Secrets in the local cluster. Omit (or enabled: false) to disable.'),
    })
    .prefault({}),
  hooks: z
    .array(
      z
        .strictObject({
          objects: z.array(z.string().min(1)).min(1).describe('Globs over <kind>/<namespace>/<name>, e.g. "configmaps/default/app", "secrets/default/*".'),
          command: z.array(z.string().min(1)).min(1).optional().describe('argv run (no shell) after a matching object was swapped.'),
          signal: z
            .strictObject({ pidFile: z.string().min(1), name: z.string().regex(/^SIG[A-Z0-9]+$/, 'must be a signal name like SIGHUP').prefault('SIGHUP') })
            .optional()
            .describe('Or: signal the process whose pid is in pidFile.'),
          debounceMs: z.number().int().min(0).prefault(200).describe('Changes within this window fire the hook once.'),
          timeoutSeconds: z.number().positive().prefault(30).describe('A command running longer is killed and reported.'),
        })
        .refine((h) => !!h.command !== !!h.signal, { message: 'give exactly one of command or signal' }),
    )
    .prefault([])
    .describe('Run after an object\'s files were swapped.'),
  templates: z
    .array(template)
    .prefault([])
    .superRefine((list, ctx) => {
      const seen = new Map<string, number>();
      list.forEach((t, i) => {
        for (const [field, value] of [['name', t.name], ['dest', t.dest]] as const) {
          const first = seen.get(`${field}:${value}`);
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, field], message: `same ${field} as templates[${first}]` });
          else seen.set(`${field}:${value}`, i);
        }
      });
      // A directory dest is confsync's alone: anything else written inside it is refused there, or pruned.
      list.forEach((t, i) => {
        const owner = list.findIndex((d, j) => j !== i && d.destFile !== undefined && isInside(t.dest, d.dest) && t.dest !== d.dest);
        if (owner >= 0) ctx.addIssue({ code: 'custom', path: [i, 'dest'], message: `is inside templates[${owner}]'s directory dest ${list[owner]!.dest}` });
      });
    })
    .describe('Files rendered from keys with Liquid templates (README "Templates").'),
  metrics: z
    .strictObject({
      listen: z
        .string()
        .regex(/^[^:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'must be host:port')
        .optional()
        .describe('host:port for /metrics, /healthz and /readyz. Omit to disable.'),
      stallSeconds: z.number().positive().prefault(30).describe('/readyz fails when etcd has gone quiet, or applied state has stayed behind what etcd committed, for this long.'),
    })
    .prefault({}),
  status: z
    .strictObject({
      leaseTtlSeconds: z.number().int().min(2).prefault(10).describe('TTL of the lease under PREFIX/status/<cluster>/<node>: the key vanishes this long after the daemon dies.'),
      intervalSeconds: z.number().positive().prefault(2).describe('How often the status key is rewritten when something changed.'),
    })
    .prefault({}),
  guard: z
    .strictObject({
      enabled: z.boolean().prefault(true).describe('Hold mass deletes until an operator runs `confsync release` (or the keys come back).'),
      maxDeletePercent: z.number().min(0).max(100).prefault(50).describe('A batch removing more than this share of the objects here is held…'),
      minObjects: z.number().int().min(1).prefault(10).describe('…when it removes at least this many objects.'),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxObjectKeys: z.number().int().min(1).prefault(1000).describe('An object with more keys is held (last good state kept) and reported: one huge object must not starve the rest.'),
      maxObjectBytes: z.number().int().min(1).prefault(8 * 1024 * 1024).describe("An object whose values add up to more bytes is held and reported. (The Kubernetes sink also refuses objects over the API server's own 1 MiB cap.)"),
      retryMaxSeconds: z.number().positive().prefault(300).describe('A sink error is retried after 1 s, 2 s, 4 s … up to this.'),
    })
    .prefault({}),
  stateDir: z
    .string()
    .min(1)
    .prefault(DEFAULT_STATE_DIR)
    .describe("The daemon's own state (0700): the encrypted local snapshot and the envelopes' replay high-water marks. Give it a persistent path of its own, never inside a files or secrets root; one daemon per dir."),
  snapshotIntervalSeconds: z
    .number()
    .positive()
    .prefault(1)
    .describe('At most one write of the local snapshot per this long: how stale it may be at a crash or an offline start. A write appends the changes since the last one to the journal (about 1 ms); the whole state is re-sealed only at the first write after a start, after a re-list, and when the journal outgrows half the snapshot.'),
  resyncSeconds: z
    .number()
    .positive()
    .prefault(60)
    .describe('How often every object is re-checked against desired state (repairs drift missed by file events): links and dirs each pass; in the Kubernetes sink, everything.'),
  verifySeconds: z
    .number()
    .positive()
    .prefault(600)
    .describe("How often the resync also looks at each payload dir's and file's metadata (a file added, removed or edited in place is restored then) and prunes; at most every resyncSeconds."),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).prefault('info'),
      format: z.enum(['auto', 'json', 'pretty']).prefault('auto').describe('auto: coloured lines on a terminal, JSON lines otherwise (journald, kubectl logs, jq).'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
