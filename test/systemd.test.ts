import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/**
 * systemd/confsync.service, checked with systemd's own analyzer (Debian package
 * `systemd`; no running systemd is needed):
 *  - `systemd-analyze security --offline=true` rates its exposure 2.0 or lower;
 *  - `systemd-analyze verify` finds nothing wrong with it;
 *  - its paths agree with config.example.yaml and docs/operations.md.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const UNIT = path.join(REPO, 'systemd', 'confsync.service');
const EXEC_START = '/usr/bin/confsync run --config /etc/confsync/config.yaml';
const MAX_EXPOSURE = 2.0;

function analyze(...args: string[]) {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.fail('systemd-analyze not found: install it with "apt-get install -y systemd" (scripts/setup.sh)');
  }
  return r;
}

/** `Key=value` lines of the unit; repeated keys keep every value. */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

test('systemd-analyze is new enough for --offline (systemd ≥ 250)', () => {
  const r = analyze('--version');
  assert.equal(r.status, 0, r.stderr);
  const version = Number(/systemd (\d+)/.exec(r.stdout)?.[1]);
  assert.ok(version >= 250, `systemd ${version}: security --offline needs 250 or later`);
});

test(`exposure level is ${MAX_EXPOSURE.toFixed(1)} or lower (systemd-analyze security --offline=true)`, () => {
  // --threshold counts in tenths: 20 = 2.0. Its exit status and the printed level must agree.
  const r = analyze('security', '--offline=true', `--threshold=${MAX_EXPOSURE * 10}`, '--no-pager', UNIT);
  const line = /Overall exposure level for confsync\.service: (\d+\.\d+) \S+/.exec(r.stdout);
  assert.ok(line, `no "Overall exposure level" line in:\n${r.stdout}\n${r.stderr}`);
  const level = Number(line[1]);
  assert.ok(level <= MAX_EXPOSURE, `exposure ${level} > ${MAX_EXPOSURE}:\n${r.stdout.split('\n').filter((l) => l.startsWith('✗')).join('\n')}`);
  assert.equal(r.status, 0, `--threshold=${MAX_EXPOSURE * 10} failed: ${r.stderr}`);
});

test('systemd-analyze verify: clean, with ExecStart pointed at this build', () => {
  // verify checks that ExecStart's binary exists and is executable. /usr/bin/confsync
  // exists only after `npm install -g` (docs/operations.md), so the unit is verified
  // twice: as shipped, where the only complaint allowed is that missing binary, and as a
  // copy whose ExecStart runs this checkout's build the way docs/operations.md's /opt
  // layout does (`/usr/bin/node …/dist/src/main.js`). Every other line is the same file.
  const shipped = analyze('verify', '--no-pager', UNIT);
  const complaints = shipped.stderr.split('\n').filter((l) => l.trim() !== '');
  if (fs.existsSync('/usr/bin/confsync')) {
    assert.deepEqual(complaints, [], 'verify of the shipped unit');
    assert.equal(shipped.status, 0);
  } else {
    assert.equal(complaints.length, 1, `one complaint about the shipped unit, got:\n${complaints.join('\n')}`);
    assert.match(complaints[0]!, /Command \/usr\/bin\/confsync is not executable/);
  }

  const main = path.join(REPO, 'dist', 'src', 'main.js');
  assert.ok(fs.existsSync(main), `${main} is built`);
  const text = fs.readFileSync(UNIT, 'utf8');
  assert.ok(text.includes(`ExecStart=${EXEC_START}\n`));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-unit-'));
  try {
    const copy = path.join(dir, 'confsync.service');
    fs.writeFileSync(copy, text.replace(`ExecStart=${EXEC_START}\n`, `ExecStart=${process.execPath} ${main} run --config /etc/confsync/config.yaml\n`));
    const r = analyze('verify', '--no-pager', copy);
    assert.equal(r.stderr.trim(), '', 'verify prints nothing');
    assert.equal(r.status, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the unit, config.example.yaml and docs/operations.md name the same paths', () => {
  const unit = directives(fs.readFileSync(UNIT, 'utf8'));
  const one = (key: string) => {
    const v = unit.get(key);
    assert.equal(v?.length, 1, `${key}= set once`);
    return v![0]!;
  };
  assert.equal(one('ExecStart'), EXEC_START);
  assert.equal(one('Type'), 'simple');
  assert.equal(one('KillSignal'), 'SIGTERM');
  assert.equal(one('Restart'), 'on-failure');
  assert.match(one('RestartSec'), /^\d+s?$/);
  assert.match(one('TimeoutStopSec'), /^\d+s?$/);
  assert.deepEqual(one('StateDirectory').split(/\s+/), ['confsync', 'confsync-state'], 'the files root, and the state dir apart from it');
  assert.equal(one('RuntimeDirectory'), 'confsync');
  assert.equal(one('RuntimeDirectoryPreserve'), 'yes');
  assert.equal(one('ConfigurationDirectory'), 'confsync');
  assert.notEqual(one('User'), 'root');
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('MemoryDenyWriteExecute'), 'no', "V8's JIT needs it off");

  const example = parse(fs.readFileSync(path.join(REPO, 'config.example.yaml'), 'utf8'));
  const [filesDir, stateDir] = one('StateDirectory').split(/\s+/);
  assert.equal(example.sinks.files.root, `/var/lib/${filesDir}`, 'files root is the first StateDirectory');
  assert.equal(example.stateDir, `/var/lib/${stateDir}`, 'stateDir is the second: not inside the files root');
  assert.ok(example.sinks.files.secretsRoot.startsWith(`/run/${one('RuntimeDirectory')}/`), 'secrets root is under the RuntimeDirectory (tmpfs)');

  const ops = fs.readFileSync(path.join(REPO, 'docs', 'operations.md'), 'utf8');
  for (const p of ['/usr/bin/confsync', '/etc/confsync/config.yaml', example.sinks.files.root, example.sinks.files.secretsRoot, 'systemd/confsync.service']) {
    assert.ok(ops.includes(p), `docs/operations.md mentions ${p}`);
  }
});
