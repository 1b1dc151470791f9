/**
 * Templates through the real daemon (child processes) and one real etcd shared
 * by this file (each test under its own prefix): a confd-style nginx upstream
 * rendered by three clusters from their own view of the keys, re-rendered on a
 * put; check before the swap and reload after it; a failing check keeps the old
 * file; one transaction of 50 keys is one render; a template reading secrets
 * where it may not is refused (at start for a file, at render for one in etcd);
 * no secret value in the daemon's log; `template render` and `plan` off-line.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { parseConfig } from '../src/config/load.js';
import { seal } from '../src/envelope/envelope.js';
import { UserError } from '../src/errors.js';
import { prepareTemplates } from '../src/render/load.js';
import { generateIdentity, recipientOf, writeIdentityFile } from '../src/envelope/identity.js';
import { runCli } from './harness/cli.js';
import { DaemonProcess, readOr, until } from './harness/daemon.js';
import { startEtcd, type EtcdHandle } from './harness/etcd.js';
import { freePort } from './harness/ports.js';

let etcd: EtcdHandle;
let etcdc: Etcd3;
const dirs: string[] = [];
const tmpDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-tpl-'));
  dirs.push(d);
  return d;
};

before(async () => {
  etcd = await startEtcd();
  etcdc = new Etcd3({ hosts: etcd.endpoint });
});
after(async () => {
  etcdc.close();
  await etcd.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);
const lines = (file: string) => (readOr(file) ?? '').split('\n').filter(Boolean);
const count = (log: string, needle: string) => log.split('\n').filter((l) => l.includes(needle)).length;

const UPSTREAM = `upstream app {
{%- assign webs = configmaps | match: "default/web-*" %}
{%- for w in webs %}
  server {{ w.keys.host }}:{{ w.keys.port | default: "80" }};
{%- endfor %}
}
# cluster {{ cluster.name }} ({{ cluster.labels.region }})
`;

test('nginx upstream: three clusters render their own view (overrides, placement, a cluster template), a put re-renders; missing: keep waits; an etcd template reading secrets into a 0644 file fails by name', async () => {
  const P = '/t-upstream';
  const put = (k: string, v: string) => etcdc.put(`${P}/${k}`).value(v);
  await put('global/templates/upstream', UPSTREAM);
  await put('clusters/ap/templates/upstream', '{% assign webs = configmaps | match: "default/web-*" %}ap:{% for w in webs %} {{ w.keys.host }}{% endfor %}\n');
  await put('global/templates/leaky', 'pw={{ secrets["default/db"].keys.password }}\n');
  await put('global/configmaps/default/web-1/host', '10.0.0.1');
  await put('global/configmaps/default/web-1/port', '8080');
  await put('global/configmaps/default/web-1/@meta', JSON.stringify({ placement: { clusters: ['eu', 'us'] } }));
  await put('global/configmaps/default/web-2/host', '10.0.0.2');
  await put('clusters/eu/configmaps/default/web-2/host', '10.1.0.2');
  await put('clusters/us/configmaps/default/web-3/host', '10.2.0.3');
  await put('global/configmaps/default/other/host', 'not-a-web');

  const daemons = Object.fromEntries(
    ['eu', 'us', 'ap'].map((cluster) => {
      const dir = tmpDir();
      fs.writeFileSync(path.join(dir, 'later.tmpl'), 'v={{ configmaps["default/later"].keys.v }}\n');
      const templates = [
        { name: 'upstream', etcd: 'upstream', dest: path.join(dir, 'nginx', 'upstream.conf') },
        { name: 'later', source: path.join(dir, 'later.tmpl'), dest: path.join(dir, 'later.conf'), missing: 'keep' },
        { name: 'leaky', etcd: 'leaky', dest: path.join(dir, 'leaky.conf'), mode: '0644' },
      ];
      const d = new DaemonProcess({ cluster, labels: { region: `${cluster}-1` }, etcd: { endpoints: [etcd.endpoint], prefix: P }, templates }, dir);
      return [cluster, { d, dir, file: path.join(dir, 'nginx', 'upstream.conf') }];
    }),
  );
  try {
    for (const { d } of Object.values(daemons)) d.start();
    await Promise.all(Object.values(daemons).map(({ d }) => d.ready()));
    const want = {
      eu: 'upstream app {\n  server 10.0.0.1:8080;\n  server 10.1.0.2:80;\n}\n# cluster eu (eu-1)\n',
      us: 'upstream app {\n  server 10.0.0.1:8080;\n  server 10.0.0.2:80;\n  server 10.2.0.3:80;\n}\n# cluster us (us-1)\n',
      ap: 'ap: 10.0.0.2\n',
    };
    for (const [cluster, { file }] of Object.entries(daemons)) {
      await until(() => readOr(file) === want[cluster as keyof typeof want], `${cluster}'s upstream.conf (has ${JSON.stringify(readOr(file))})`);
      assert.equal(mode(file), '644');
    }
    const eu = daemons.eu!;
    await until(() => eu.d.log.includes('template \\"leaky\\" not rendered'), 'the leaky template refused by name');
    assert.match(eu.d.log, /"template":"leaky".*may not read secrets/);
    assert.equal(readOr(path.join(eu.dir, 'leaky.conf')), undefined);
    assert.match(eu.d.log, /template \\"later\\" waits for what it reads to exist/);
    assert.equal(readOr(path.join(eu.dir, 'later.conf')), undefined, 'missing: keep writes nothing yet');

    await put('global/configmaps/default/web-4/host', '10.0.0.4');
    await put('global/configmaps/default/later/v', 'now');
    await until(() => readOr(eu.file)?.includes('server 10.0.0.4:80;'), 'eu re-rendered after a put');
    await until(() => readOr(daemons.ap!.file) === 'ap: 10.0.0.2 10.0.0.4\n', 'ap re-rendered after a put');
    await until(() => readOr(path.join(eu.dir, 'later.conf')) === 'v=now\n', 'the waiting template rendered once its key exists');
    assert.equal(readOr(eu.file), 'upstream app {\n  server 10.0.0.1:8080;\n  server 10.1.0.2:80;\n  server 10.0.0.4:80;\n}\n# cluster eu (eu-1)\n');
  } finally {
    await Promise.all(Object.values(daemons).map(({ d }) => d.cleanup()));
  }
});

test('check before the swap, reload after it; a failing check keeps the old file and the next good value goes live; 50 keys in one transaction are one render; no secret in the log; template render and plan', async () => {
  const P = '/t-env';
  const dir = tmpDir();
  const id = generateIdentity();
  const idFile = path.join(dir, 'eu.key');
  await writeIdentityFile(idFile, id);
  const secret = 'pw-initial-5a7c93';
  const at = 'global/secrets/default/db/password';
  await etcdc.put(`${P}/${at}`).value(await seal(Buffer.from(secret), at, [recipientOf(id.publicKey)]));
  const level = (v: string) => etcdc.put(`${P}/global/configmaps/default/app/level`).value(v);
  await level('info');

  const dest = path.join(dir, 'app.env');
  // A second template in the directory form (destFile): it reads only the secret, so it renders once.
  const envDir = path.join(dir, 'envdir');
  fs.writeFileSync(path.join(dir, 'pw.tmpl'), 'DB_PASSWORD={{ secrets["default/db"].keys.password }}\n');
  const events = path.join(dir, 'events');
  fs.writeFileSync(
    path.join(dir, 'env.tmpl'),
    [
      'LEVEL={{ configmaps["default/app"].keys.level | env_quote }}',
      'DB_PASSWORD={{ secrets["default/db"].keys.password | env_quote }}',
      '{%- assign bulk = configmaps | match: "default/bulk-*" %}',
      'BULK={{ bulk | size }}',
      '',
    ].join('\n'),
  );
  const sh = (script: string) => ['/bin/sh', '-c', script];
  const port = await freePort();
  const d = new DaemonProcess(
    {
      cluster: 'eu',
      identity: idFile,
      metrics: { listen: `127.0.0.1:${port}` },
      status: { intervalSeconds: 0.2 },
      etcd: { endpoints: [etcd.endpoint], prefix: P },
      templates: [
        {
          name: 'env',
          source: path.join(dir, 'env.tmpl'),
          dest,
          mode: '0600',
          // What dest holds while the check runs, and a refusal of any BAD value.
          check: sh(`echo check >> '${events}'; cat '${dest}' > '${dir}/at-check' 2>/dev/null; ! grep -q BAD "$CONFSYNC_RENDERED_FILE"`),
          reload: { command: sh(`cp "$CONFSYNC_RENDERED_FILE" '${dir}/at-reload'; echo reload >> '${events}'`) },
        },
        { name: 'pw', source: path.join(dir, 'pw.tmpl'), dest: envDir, destFile: 'pw.env', mode: '0400' },
      ],
    },
    dir,
  );
  d.start();
  try {
    await d.ready();
    await until(() => readOr(dest)?.includes('LEVEL="info"'), 'first render');
    assert.equal(readOr(dest), `LEVEL="info"\nDB_PASSWORD="${secret}"\nBULK=0\n`);
    assert.equal(mode(dest), '600');
    await until(() => lines(events).length === 2, 'check and reload');
    assert.deepEqual(lines(events), ['check', 'reload']);
    await until(() => readOr(path.join(envDir, 'pw.env')), 'the directory-form template');
    assert.equal(readOr(path.join(envDir, 'pw.env')), `DB_PASSWORD=${secret}\n`);
    const payloadDir = fs.readlinkSync(path.join(envDir, '..data'));
    assert.deepEqual(fs.readdirSync(envDir).sort(), [payloadDir, '..data', 'pw.env'].sort());
    assert.equal(fs.readlinkSync(path.join(envDir, 'pw.env')), '..data/pw.env');
    assert.deepEqual([mode(envDir), mode(path.join(envDir, payloadDir)), mode(path.join(envDir, payloadDir, 'pw.env'))], ['700', '700', '400']);

    await level('debug');
    await until(() => lines(events).length === 4, 'second check and reload');
    assert.deepEqual(lines(events), ['check', 'reload', 'check', 'reload']);
    assert.match(readOr(path.join(dir, 'at-check'))!, /LEVEL="info"/, 'the check ran while dest still held the old file');
    assert.match(readOr(path.join(dir, 'at-reload'))!, /LEVEL="debug"/, 'the reload ran with the new file in place');

    await level('BAD');
    await until(() => d.log.includes('template \\"env\\" not rendered: check /bin/sh refused the new file (exit 1'), 'the check failure, by template name');
    assert.equal(readOr(dest), `LEVEL="debug"\nDB_PASSWORD="${secret}"\nBULK=0\n`, 'old file intact');
    assert.deepEqual(lines(events), ['check', 'reload', 'check', 'reload', 'check'], 'no reload after a refused check');
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.confsync-')), [], 'no temp file left');

    await level('warn');
    await until(() => readOr(dest)?.includes('LEVEL="warn"'), 'the next good value goes live');

    // One transaction of 50 keys: one render. A put after it is the next render: nothing renders in between.
    await until(() => lines(events).length === 7, 'reload after warn');
    const rendersBefore = count(d.log, '"msg":"template rendered"');
    const ops = Array.from({ length: 50 }, (_, i) => etcdc.put(`${P}/global/configmaps/default/bulk-${String(i).padStart(2, '0')}/k`).value(`v${i}`));
    await etcdc.if(`${P}/never`, 'Create', '==', 0).then(...ops).commit();
    await until(() => lines(events).length === 9, 'check and reload of the transaction');
    assert.equal(readOr(dest), `LEVEL="warn"\nDB_PASSWORD="${secret}"\nBULK=50\n`);
    await level('error');
    await until(() => lines(events).length === 11, 'check and reload of the put after it');
    assert.equal(readOr(dest), `LEVEL="error"\nDB_PASSWORD="${secret}"\nBULK=50\n`);
    assert.equal(count(d.log, '"msg":"template rendered"') - rendersBefore, 2, 'one render for the 50-key transaction, one for the put');

    // Off-line: masked by default, the value with --show-secrets; plan says the file is current.
    const cli = (args: string[]) => runCli(args, { cwd: dir, endpoint: etcd.endpoint });
    const masked = cli(['template', 'render', '--config', d.configFile, '--name', 'env']);
    assert.equal(masked.code, 0, masked.stderr);
    assert.equal(masked.stdout, 'LEVEL="error"\nDB_PASSWORD="********"\nBULK=50\n');
    const shown = cli(['template', 'render', '--config', d.configFile, '--name', 'env', '--show-secrets', '-i', idFile]);
    assert.equal(shown.stdout, readOr(dest));
    const plan = cli(['plan', '--config', d.configFile]);
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, new RegExp(`^unchanged template env ${dest}$`, 'm'));
    assert.match(plan.stdout, new RegExp(`^unchanged template pw ${envDir}/pw.env$`, 'm'));
    assert.match(plan.stdout, /0 of 2 template\(s\) would change/);

    // Counted by template and result; the status key counts the refused check as an error and names the template.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^confsync_template_renders_total\{template="env",result="written"\} 5$/m);
    assert.match(metrics, /^confsync_template_renders_total\{template="env",result="failed"\} 1$/m);
    const status = await until(async () => {
      const s = JSON.parse((await etcdc.get(`${P}/status/eu/n1`).string()) ?? '{}');
      return s.templates?.failed === 1 && s;
    }, 'status with the template error');
    assert.ok(status.errors >= 1);
    assert.equal(status.templates.lastError.template, 'env');
    assert.match(status.templates.lastError.reason, /^check \/bin\/sh refused the new file \(exit 1/);

    assert.equal(count(d.log, secret), 0, 'the secret value is not in the daemon log');
    assert.ok(!metrics.includes(secret) && !JSON.stringify(status).includes(secret));
    for (const out of [masked, plan]) assert.ok(!(out.stdout + out.stderr).includes(secret));
  } finally {
    await d.cleanup();
  }
});

test('a template file that reads secrets into a world-readable file is refused at start (exit 2, one line naming the field); config mistakes name theirs', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'leak.tmpl'), 'pw={% assign s = secrets["default/db"] %}{{ s.keys.password }}\n');
  const config = (templates: unknown[]) => ({ cluster: 'eu', node: 'n', stateDir: path.join(dir, 'state'), sinks: { files: { root: path.join(dir, 'out') } }, templates });
  const write = (templates: unknown[]) => {
    const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
    fs.writeFileSync(file, JSON.stringify(config(templates)));
    return file;
  };
  const leak = [{ name: 'leak', source: path.join(dir, 'leak.tmpl'), dest: '/tmp/leak.conf' }];
  const r = runCli(['run', '--config', write(leak)], { cwd: dir, endpoint: etcd.endpoint });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^confsync: field templates\[0\]\.mode: template "leak" reads secrets, so its file must be private: set mode "0600" or "0400", or put dest \(\/tmp\/leak\.conf\) under the secrets root \S+\n$/);

  // The rest in-process, through the same loader and check the daemon runs first.
  const load = (templates: unknown[]) => assertUserError(() => prepareTemplates(parseConfig(config(templates), 'c.yaml', {}, {})));
  const cases: { templates: unknown[]; want: RegExp }[] = [
    { templates: [{ name: 'x', source: path.join(dir, 'nope.tmpl'), dest: '/tmp/x' }], want: /field templates\[0\]\.source: cannot read .*nope\.tmpl \(ENOENT\)/ },
    { templates: [{ name: 'x', source: path.join(dir, 'leak.tmpl'), dest: '/tmp/x', mode: '0640' }], want: /field templates\[0\]\.mode: template "x" reads secrets/ },
    { templates: [{ name: 'x', etcd: 'x', dest: 'relative/x' }], want: /field templates\[0\]\.dest: must be an absolute file path/ },
    { templates: [{ name: 'x', etcd: 'x', source: '/a', dest: '/tmp/x' }], want: /field templates\[0\]: give exactly one of source or etcd/ },
    { templates: [{ name: 'x', etcd: 'x', dest: '/tmp/x' }, { name: 'x', etcd: 'y', dest: '/tmp/x' }], want: /field templates\[1\]\.name: same name as templates\[0\]; field templates\[1\]\.dest: same dest as templates\[0\]/ },
    { templates: [{ name: 'Bad_Name', etcd: 'x', dest: '/tmp/x' }], want: /field templates\[0\]\.name: template name "Bad_Name" is not a DNS-1123 label/ },
    { templates: [{ name: 'x', etcd: 'x', dest: '/tmp/x', mode: 644 }], want: /field templates\[0\]\.mode: must be a quoted octal mode/ },
    // A directory dest (destFile): a plain name inside, nothing else inside it, not where the file sink keeps its objects.
    { templates: [{ name: 'x', etcd: 'x', dest: '/tmp/d', destFile: '../etc/passwd' }], want: /field templates\[0\]\.destFile: must be a plain file name/ },
    { templates: [{ name: 'x', etcd: 'x', dest: '/tmp/d', destFile: '..data' }], want: /field templates\[0\]\.destFile: must not be "\." or start with "\.\."/ },
    { templates: [{ name: 'x', etcd: 'x', dest: '/tmp/d', destFile: 'x.conf' }, { name: 'y', etcd: 'y', dest: '/tmp/d/y.conf' }], want: /field templates\[1\]\.dest: is inside templates\[0\]'s directory dest \/tmp\/d$/ },
    { templates: [{ name: 'x', etcd: 'x', dest: path.join(dir, 'out', 'secrets', 'app'), destFile: 'x.env' }], want: /field templates\[0\]\.dest: .*: a directory dest must not be inside the file sink's .*\/out\/secrets \(/ },
    { templates: [{ name: 'x', etcd: 'x', dest: path.join(dir, 'out', 'configmaps', 'a', 'b'), destFile: 'x.env' }], want: /field templates\[0\]\.dest: .*: a directory dest must not be inside the file sink's .*\/out\/configmaps \(/ },
  ];
  for (const c of cases) assert.match(load(c.templates), c.want);
  // The same template is fine where its file is private: under the secrets root, or 0600/0400.
  for (const t of [{ dest: path.join(dir, 'out', 'secrets', 'leak.conf') }, { dest: '/tmp/x', mode: '0400' }, { dest: path.join(dir, 'app'), destFile: 'leak.env', mode: '0400' }]) {
    assert.equal(prepareTemplates(parseConfig(config([{ ...leak[0], ...t }]), 'c.yaml', {}, {}))[0]!.secrets, true);
  }
});

function assertUserError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    assert.ok(!err.message.includes('\n'));
    return err.message;
  }
  assert.fail('expected a UserError');
}

test('lint reports a stored template that does not parse, by path', () => {
  const P = '/t-lint';
  etcd.ctl('put', `${P}/global/templates/good`, '{{ configmaps["a/b"].keys.c }}');
  etcd.ctl('put', `${P}/clusters/eu/templates/bad`, '{% for x in y %}no end');
  const r = runCli(['lint', '--prefix', P], { cwd: os.tmpdir(), endpoint: etcd.endpoint });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /^clusters\/eu\/templates\/bad: not a valid Liquid template: tag .*not closed/m);
  assert.doesNotMatch(r.stdout, /good/);
});
