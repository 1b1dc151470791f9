import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { startEtcd } from './harness/etcd.js';
import { MAIN } from './harness/daemon.js';

/**
 * The Dockerfile, checked without a Docker engine: what it copies exists and is
 * not dockerignored, the entrypoint is a file the build produces, the runtime
 * stage gets production dependencies only and runs as a numeric non-root user,
 * and CMD/VOLUME name the paths config.example.yaml and docs/operations.md use.
 * Then the daemon itself runs under the image's filesystem contract — root
 * filesystem read-only, only the two volumes writable — emulated with a mount
 * namespace.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string;
  from: string;
  workdir: string;
  steps: Instruction[];
}

/** Instructions with continuations joined and comments dropped; stages split at FROM. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line)!;
    const ins = { op: op!.toUpperCase(), args: rest!.trim() };
    if (ins.op === 'ARG' && stages.length === 0) {
      const [k, v] = ins.args.split('=');
      args.set(k!, v ?? '');
    } else if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      const from = m[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? '');
      stages.push({ name: m[2] ?? String(stages.length), from, workdir: '/', steps: [] });
    } else {
      const stage = stages.at(-1)!;
      if (ins.op === 'WORKDIR') stage.workdir = path.posix.resolve(stage.workdir, ins.args);
      stage.steps.push(ins);
    }
  }
  return { args, stages };
}

/** COPY [--from=x] src... dest → sources, destination (resolved against WORKDIR). */
function copyOf(stage: Stage, ins: Instruction, workdir: string): { from?: string; srcs: string[]; dest: string } {
  const words = ins.args.split(/\s+/);
  const from = words[0]!.startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
  assert.ok(!words[0]!.startsWith('--'), `${stage.name}: only --from is understood here: ${ins.args}`);
  const dest = words.pop()!;
  return { from, srcs: words, dest: path.posix.resolve(workdir, dest) };
}

/** Docker's .dockerignore rule for the simple patterns used: last match wins; a match on a parent dir counts. */
function dockerignored(patterns: string[], file: string): boolean {
  let ignored = false;
  const parts = file.split('/');
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const re = new RegExp(`^${(negate ? raw.slice(1) : raw).replace(/\/$/, '').replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`);
    if (parts.some((_, i) => re.test(parts.slice(0, i + 1).join('/')))) ignored = !negate;
  }
  return ignored;
}

const dockerfile = parseDockerfile(fs.readFileSync(path.join(REPO, 'Dockerfile'), 'utf8'));
const runtime = dockerfile.stages.at(-1)!;
const last = (stage: Stage, op: string) => stage.steps.filter((s) => s.op === op).at(-1);
const json = (stage: Stage, op: string): string[] => JSON.parse(last(stage, op)?.args ?? 'null');

test('stages: build with all dependencies on node:20-bookworm-slim, runtime with production dependencies only', () => {
  const build = dockerfile.stages.find((s) => s.steps.some((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.args)));
  assert.ok(build, 'a stage runs npm run build');
  assert.equal(build.from, 'node:20-bookworm-slim');
  assert.ok(build.steps.some((i) => i.op === 'RUN' && /\bnpm ci\b(?!.*--omit)/.test(i.args)), 'the build stage installs dev dependencies (npm ci)');
  assert.equal(runtime.from, 'node:20-bookworm-slim');

  // node_modules in the runtime come from a stage that ran `npm ci --omit=dev`, never from the build stage.
  const copies = runtime.steps.filter((i) => i.op === 'COPY').map((i) => copyOf(runtime, i, runtime.workdir));
  const modules = copies.filter((c) => c.srcs.some((s) => s.endsWith('node_modules')));
  assert.equal(modules.length, 1, 'node_modules copied once');
  const prod = dockerfile.stages.find((s) => s.name === modules[0]!.from);
  assert.ok(prod, `node_modules come from stage ${modules[0]!.from}`);
  assert.ok(prod.steps.some((i) => i.op === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.args)), `stage ${prod.name} runs npm ci --omit=dev`);
  assert.ok(!runtime.steps.some((i) => i.op === 'RUN' && /\bnpm (ci|install)\b(?!.*--omit=dev)/.test(i.args)), 'no dev install in the runtime');
});

test('every COPY source exists in the build context and is not dockerignored', () => {
  const ignore = fs.readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  let fromContext = 0;
  for (const stage of dockerfile.stages) {
    let workdir = '/';
    for (const ins of stage.steps) {
      if (ins.op === 'WORKDIR') workdir = path.posix.resolve(workdir, ins.args);
      if (ins.op !== 'COPY' && ins.op !== 'ADD') continue;
      assert.equal(ins.op, 'COPY', 'COPY, not ADD');
      const c = copyOf(stage, ins, workdir);
      if (c.from) {
        assert.ok(dockerfile.stages.some((s) => s.name === c.from), `${stage.name}: --from=${c.from} is a stage`);
        continue;
      }
      for (const src of c.srcs) {
        fromContext++;
        assert.ok(fs.existsSync(path.join(REPO, src)), `${stage.name}: COPY ${src}: exists`);
        assert.ok(!dockerignored(ignore, src), `${stage.name}: COPY ${src}: not excluded by .dockerignore`);
        if (fs.statSync(path.join(REPO, src)).isDirectory()) {
          const sample = fs.readdirSync(path.join(REPO, src), { recursive: true }).map(String).find((f) => f.endsWith('.ts'));
          if (sample) assert.ok(!dockerignored(ignore, `${src}/${sample}`), `${src}/${sample}: not excluded`);
        }
      }
    }
  }
  assert.ok(fromContext >= 4);
  // What must stay out of the context.
  for (const p of ['node_modules/etcd3/package.json', 'dist/src/main.js', '.git/HEAD', '.confsync/identity.key', 'identity.key', 'test/daemon.test.ts']) {
    assert.ok(dockerignored(ignore, p), `${p} is excluded`);
  }
});

test('ENTRYPOINT runs a file the build produces, as a numeric non-root USER', () => {
  const entry = json(runtime, 'ENTRYPOINT');
  assert.deepEqual(entry, ['node', '/app/dist/src/main.js']);
  const user = last(runtime, 'USER')!.args;
  assert.match(user, /^\d+:\d+$/, 'numeric uid:gid (runAsNonRoot can check it)');
  assert.ok(user.split(':').every((n) => Number(n) !== 0), 'not root');
  assert.ok(runtime.steps.findIndex((i) => i.op === 'USER') > Math.max(...runtime.steps.map((i, n) => (i.op === 'RUN' ? n : -1))), 'USER after every RUN');

  // Trace /app/dist/src/main.js back to the stage and path it was copied from.
  const copies = runtime.steps.filter((i) => i.op === 'COPY').map((i) => copyOf(runtime, i, runtime.workdir));
  const target = entry[1]!;
  const carrier = copies.filter((c) => target.startsWith(`${c.dest}/`)).sort((a, b) => b.dest.length - a.dest.length)[0];
  assert.ok(carrier?.from, `${target} comes from a build stage`);
  const build = dockerfile.stages.find((s) => s.name === carrier.from)!;
  const producedAt = path.posix.join(carrier.srcs[0]!, path.posix.relative(carrier.dest, target));
  const relative = path.posix.relative(build.workdir, producedAt);
  assert.equal(relative, 'dist/src/main.js');
  assert.ok(fs.existsSync(path.join(REPO, relative)), `npm run build produces ${relative} (it exists in this build)`);
  assert.equal(JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).bin.confsync, relative, 'the same file is the package bin');
  // dist/src/version.js reads ../../package.json; ESM needs its "type": "module".
  assert.ok(copies.some((c) => c.srcs.includes('package.json') && !c.from && c.dest === path.posix.resolve(runtime.workdir, '.')), 'package.json is copied next to dist/');
  assert.equal(path.posix.resolve(path.posix.dirname(target), '../../package.json'), '/app/package.json');
});

test('CMD and VOLUME name the paths of config.example.yaml, the systemd unit and docs/operations.md', () => {
  const cmd = json(runtime, 'CMD');
  assert.deepEqual(cmd, ['run', '--config', '/etc/confsync/config.yaml']);
  const r = spawnSync(process.execPath, [MAIN, cmd[0]!, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `"${cmd[0]}" is a confsync verb`);
  assert.match(r.stdout, /--config/);

  const volumes = json(runtime, 'VOLUME');
  assert.deepEqual(volumes, ['/var/lib/confsync', '/run/confsync', '/var/lib/confsync-state']);
  const example = parse(fs.readFileSync(path.join(REPO, 'config.example.yaml'), 'utf8'));
  assert.equal(example.sinks.files.root, volumes[0]);
  assert.equal(example.stateDir, volumes[2], 'the state dir is a volume of its own, not the files root');
  assert.ok(example.sinks.files.secretsRoot.startsWith(`${volumes[1]}/`));
  const unit = fs.readFileSync(path.join(REPO, 'systemd', 'confsync.service'), 'utf8');
  assert.match(unit, /--config \/etc\/confsync\/config\.yaml/);

  const ops = fs.readFileSync(path.join(REPO, 'docs', 'operations.md'), 'utf8');
  for (const p of [cmd[2]!, ...volumes, example.sinks.files.secretsRoot, 'USER 10001', '--read-only']) assert.ok(ops.includes(p), `docs/operations.md mentions ${p}`);
  // The volume mount points exist in the image, owned by the runtime user.
  const run = runtime.steps.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ');
  for (const v of volumes) assert.ok(run.includes(v), `the image creates ${v}`);
  assert.ok(run.includes(`chown ${last(runtime, 'USER')!.args}`), 'and hands them to USER');
});

function namespacesWork(): string | undefined {
  const r = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', 'mount -t tmpfs tmpfs /run && mount -o remount,bind,ro / && true'], { encoding: 'utf8' });
  if (r.error) return `unshare: ${r.error.message}`;
  return r.status === 0 ? undefined : `user + mount namespaces unavailable here: ${r.stderr.trim()}`;
}

test('the daemon runs with a read-only root filesystem, writing only to the two volumes (mount-namespace emulation)', async (t) => {
  const why = namespacesWork();
  if (why) {
    t.skip(why);
    return;
  }
  const etcd = await startEtcd();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-ro-'));
  try {
    // A config value and a secret sealed to this daemon, so both volumes get written.
    const identity = path.join(dir, 'identity.key');
    const keygen = spawnSync(process.execPath, [MAIN, 'keygen', '--out', identity], { encoding: 'utf8' });
    assert.equal(keygen.status, 0, keygen.stderr);
    const recipient = keygen.stdout.trim();
    const sealed = spawnSync(process.execPath, [MAIN, 'seal', '--recipient', recipient, '--path', 'global/secrets/default/db/password'], { input: 's3cret', encoding: 'utf8' });
    assert.equal(sealed.status, 0, sealed.stderr);
    etcd.ctl('put', '/confsync/global/secrets/default/db/password', sealed.stdout.trim());
    etcd.ctl('put', '/confsync/global/configmaps/default/app/greeting', 'hello');
    const config = path.join(dir, 'config.yaml');
    fs.writeFileSync(
      config,
      `cluster: eu\nnode: n1\nidentity: ${identity}\netcd: { endpoints: ["${etcd.endpoint}"] }\n` +
        'sinks: { files: { root: /var/lib/confsync, secretsRoot: /run/confsync/secrets } }\nlog: { level: debug }\n',
    );

    // Inside: tmpfs over /run and /var/lib hold the volume dirs, then / goes read-only
    // (as `docker run --read-only` leaves it). The daemon runs until both files exist.
    const script = `
      set -e
      mount -t tmpfs -o mode=0755 tmpfs /run
      mount -t tmpfs -o mode=0755 tmpfs /var/lib
      mkdir -m 0750 /run/confsync; mkdir -m 0755 /var/lib/confsync; mkdir -m 0700 /var/lib/confsync-state
      mount -o remount,bind,ro /
      if touch "$PROBE" 2>/dev/null; then rm -f "$PROBE"; echo "ROOT-WRITABLE"; exit 3; fi
      "$NODE" "$MAIN" run --config "$CONFIG" & pid=$!
      i=0
      until [ -f /var/lib/confsync/configmaps/default/app/greeting ] && [ -f /run/confsync/secrets/default/db/password ]; do
        i=$((i+1)); [ $i -lt 300 ] || { echo "TIMEOUT"; kill -9 $pid; exit 4; }; sleep 0.05
      done
      echo "CONFIG=$(cat /var/lib/confsync/configmaps/default/app/greeting)"
      echo "SECRET-MODE=$(stat -L -c %a /run/confsync/secrets/default/db/password)"
      kill -TERM $pid; set +e; wait $pid; echo "EXIT=$?"
    `;
    const child = spawn('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', script], {
      env: { ...process.env, NODE: process.execPath, MAIN, CONFIG: config, PROBE: path.join(dir, 'probe') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, out);
    assert.match(out, /^CONFIG=hello$/m);
    assert.match(out, /^SECRET-MODE=400$/m);
    assert.match(out, /^EXIT=0$/m);
    assert.doesNotMatch(out, /EROFS|read-only file system/i, 'no write was attempted outside the volumes');
    assert.doesNotMatch(out, /persistent filesystem/, 'the secrets volume (tmpfs) is recognised as tmpfs');
    assert.ok(!out.includes('s3cret'), 'the secret value is not logged');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await etcd.stop();
  }
});
