#!/usr/bin/env bash
# The unit under a real systemd (`npm run test:systemd`; opt-in, not part of `npm test`).
#
# A copy of a Debian bookworm rootfs (scripts/debian-rootfs.sh, cached) gets the host's
# Node.js binary and is booted with `systemd-nspawn -b` (systemd 252 as PID 1 of its own PID
# namespace; the host network, so it reaches a real etcd this script starts on the host
# loopback). Driven with nsenter (this machine's PID 1 is not systemd, so no machinectl /
# systemd-run -M). confsync is installed the way docs/operations.md "Install on a host" says:
# the blocks marked `<!-- run by test:systemd -->` are read out of that file and run word for
# word in the container, with the tarball scripts/package-host.sh built on this host (the
# container never talks to the npm registry). Checks:
#   1. `systemctl daemon-reload && systemctl enable --now confsync` → /readyz says ready,
#      main process user confsync;
#   2. a config put with etcdctl → the file under /var/lib/confsync; a sealed secret →
#      its 0400 file under /run/confsync/secrets (so the identity is readable);
#   3. `systemctl stop` keeps files and secrets, `start` and `restart` → ready again; the
#      doc's upgrade block (same tarball) likewise; the doc's identity backup, a lost key and
#      the doc's restore → a secret sealed afterwards opens; `confsync status --wait` from
#      the host sees the node;
#   4. `systemctl kill -s KILL confsync` ×3 → a new main PID started by Restart=, ready again;
#   5. `journalctl -u confsync` holds the daemon's log lines and systemd's restarts, no
#      secret value, and the doc's jq recipe (Troubleshooting) reads it;
#   6. a config with an unknown field → the unit is failed with exit status 2, is not
#      restarted, and the journal has one line from it, naming the field;
#   7. the sandbox: a unit with confsync.service's exact [Service] sandbox runs a write
#      probe: the files root and secrets root are writable, everything else is not
#      (identity, /etc, /usr, /home, /root, /srv, /opt, /var/lib).
# Prints the times (start → ready, put → file, SIGKILL → ready again) and exits non-zero
# on the first failed check. Logs are kept in $CONFSYNC_CACHE/systemd-test/.
#
# Needs root, systemd-nspawn (Debian's systemd-container, installed when missing), etcd and
# etcdctl (scripts/setup.sh), jq, the npm registry or a warm npm cache for package-host.sh
# (on the host), and ~400 MB in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"
LOGS="$CACHE/systemd-test"
MACHINE="confsync-test-$$"
DOC="$REPO/docs/operations.md"

PASSED=0
log() { case "$1" in PASS*) PASSED=$(( PASSED + 1 )) ;; esac; printf 'test-systemd: %s\n' "$*" >&2; }
# The last line is the plain count CI reads: "test-systemd: N passed, N failed".
fail() { printf 'test-systemd: FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
T_START=$(now_ms)

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, systemd-nspawn, nsenter)"
if ! command -v systemd-nspawn >/dev/null 2>&1; then
  log "installing systemd-container (apt-get) for systemd-nspawn"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null
fi
for tool in etcd etcdctl curl nsenter jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (scripts/setup.sh --test installs etcd and jq; apt-get install curl util-linux)"
done
NODE_BIN="$(readlink -f "$(command -v node)")"

ROOTFS_CACHE="$(bash scripts/debian-rootfs.sh)"
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/confsync-systemd.XXXXXX")"
ROOT="$WORK/root"
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log
NSPAWN_PID=""; ETCD_PID=""; INIT_PID=""

cleanup() {
  local rc=$?
  if [ -n "$INIT_PID" ] && kill -0 "$INIT_PID" 2>/dev/null; then
    in_ct journalctl --no-pager -o short-precise >"$LOGS/journal.log" 2>&1 || true
    in_ct systemctl poweroff >/dev/null 2>&1 || true
  fi
  if [ -n "$NSPAWN_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
    kill "$NSPAWN_PID" 2>/dev/null || true
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  if [ -n "$ETCD_PID" ]; then kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  [ "$rc" -eq 0 ] || log "logs: $LOGS/{console,journal,etcd,install}.log"
  printf 'test-systemd: %s passed, %s failed\n' "$PASSED" "$([ "$rc" -eq 0 ] && echo 0 || echo 1)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run a command inside the booted container: all its namespaces, a clean environment.
in_ct() { nsenter -t "$INIT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# The shell blocks of docs/operations.md marked `<!-- run by test:systemd -->`, in order,
# each into $1/block-N.sh; prints how many.
doc_blocks() {
  awk -v dir="$1" '
    /^<!-- run by test:systemd -->$/ { armed = 1; next }
    armed && /^```sh$/ { n++; inblock = 1; armed = 0; next }
    inblock && /^```$/ { inblock = 0; next }
    inblock { print > (dir "/block-" n ".sh") }
    armed && !/^[[:space:]]*$/ { armed = 0 }
    END { print n + 0 }' "$DOC"
}

# --- etcd on the host loopback ------------------------------------------------------------
ETCD_PORT="$(free_port)"; PEER_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
ENDPOINT="http://127.0.0.1:$ETCD_PORT"
etcd --name systemd-test --data-dir "$WORK/etcd" \
  --listen-client-urls "$ENDPOINT" --advertise-client-urls "$ENDPOINT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "systemd-test=http://127.0.0.1:$PEER_PORT" >"$LOGS/etcd.log" 2>&1 &
ETCD_PID=$!
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINT" "$@"; }
for _ in $(seq 1 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ectl endpoint health >/dev/null 2>&1 || fail "etcd did not come up on $ENDPOINT (see $LOGS/etcd.log)"

# --- build machine: the tarball (docs/operations.md step 1) -------------------------------------
log "scripts/package-host.sh (npm pack + npm ci --omit=dev, on this host)"
t0=$(now_ms)
TARBALL="$(bash scripts/package-host.sh "$WORK" 2>>"$LOGS/install.log")" || fail "scripts/package-host.sh failed (see $LOGS/install.log)"
log "tarball $(basename "$TARBALL") in $(secs $(( $(now_ms) - t0 ))) s"
mkdir -p "$WORK/blocks"
nblocks="$(doc_blocks "$WORK/blocks")"
# Steps 2, 3, 5, 6, 7 of "Install on a host", the upgrade, the identity backup and restore.
[ "$nblocks" = 8 ] || fail "docs/operations.md has $nblocks blocks marked 'run by test:systemd', want 8 (install steps 2 3 5 6 7, upgrade, identity backup, restore)"
grep -q '/root/confsync-backup/identity.key$' "$WORK/blocks/block-7.sh" || fail "block 7 of docs/operations.md is not the identity backup"
grep -q 'install .*/root/confsync-backup/identity.key /etc/confsync/identity.key' "$WORK/blocks/block-8.sh" || fail "block 8 of docs/operations.md is not the identity restore"
grep -q 'systemctl enable --now confsync' "$WORK/blocks/block-5.sh" || fail "block 5 of docs/operations.md is not the unit step"
grep -q 'systemctl stop confsync' "$WORK/blocks/block-6.sh" || fail "block 6 of docs/operations.md is not the upgrade"
grep -q "$(basename "$TARBALL")" "$WORK/blocks/block-1.sh" || fail "docs/operations.md installs $(grep -o 'confsync-[^ ]*-opt.tgz' "$WORK/blocks/block-1.sh" | head -1), the build made $(basename "$TARBALL")"

# --- the host: a rootfs copy with Node.js ---------------------------------------------------------
log "copying the rootfs ($ROOTFS_CACHE)"
cp -a "$ROOTFS_CACHE" "$ROOT"
rm -f "$ROOT/etc/hostname"
# Node.js >= 20 at /usr/bin/node is a precondition of docs/operations.md (Debian 12 ships 18):
# the host's node binary, where a NodeSource-style package puts it. No npm in the container.
install -m 0755 "$NODE_BIN" "$ROOT/usr/bin/node"
INSTALL_DIR=/root/confsync-install
mkdir -p "$ROOT$INSTALL_DIR"
cp "$TARBALL" "$WORK"/blocks/block-*.sh "$ROOT$INSTALL_DIR/"
cat >"$ROOT$INSTALL_DIR/config.yaml" <<CONF
cluster: systemd-test
etcd:
  endpoints: [$ENDPOINT]
identity: /etc/confsync/identity.key
sinks:
  files: { root: /var/lib/confsync, secretsRoot: /run/confsync/secrets }
metrics: { listen: 127.0.0.1:$METRICS_PORT }
CONF

# --- boot ------------------------------------------------------------------------------------
log "booting with systemd-nspawn -b"
t0=$(now_ms)
systemd-nspawn -q -b --register=no --keep-unit --machine="$MACHINE" -D "$ROOT" --console=pipe \
  </dev/null >"$LOGS/console.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 1 100); do
  for p in $(pgrep -P "$NSPAWN_PID" || true); do
    # The container's PID 1: its innermost NSpid is 1.
    if awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$p/status" 2>/dev/null; then INIT_PID=$p; fi
  done
  [ -n "$INIT_PID" ] && break
  kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited (see $LOGS/console.log)"
  sleep 0.1
done
[ -n "$INIT_PID" ] || fail "no PID 1 under systemd-nspawn ($NSPAWN_PID)"
# systemctl needs PID 1's private bus socket, which systemd creates a moment after it starts.
for _ in $(seq 1 600); do
  nsenter -t "$INIT_PID" -m test -S /run/systemd/private 2>/dev/null && break
  kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited (see $LOGS/console.log)"
  sleep 0.1
done
state="$(timeout 120 nsenter -t "$INIT_PID" -a env -i PATH=/usr/bin:/bin systemctl is-system-running --wait 2>&1 || true)"
case "$state" in running|degraded) ;; *) fail "container did not finish booting: '$state'" ;; esac
[ "$state" = running ] || log "container is $state: $(in_ct systemctl --failed --no-legend --plain | tr '\n' ';')"
log "booted in $(secs $(( $(now_ms) - t0 ))) s: $(in_ct systemctl --version | head -1) as PID 1 (host PID $INIT_PID), system $state"

ready() { [ "$(curl -s --max-time 1 "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null)" = ready ]; }
wait_ready() { # $1 timeout s; prints ms to ready
  local start deadline; start=$(now_ms); deadline=$(( start + $1 * 1000 ))
  until ready; do [ "$(now_ms)" -lt "$deadline" ] || return 1; sleep 0.02; done
  echo $(( $(now_ms) - start ))
}
main_pid() { in_ct systemctl show -p MainPID --value confsync; }
# A doc block, as root in the container, from the directory holding the tarball and config.yaml.
run_block() { # $1 block number, $2 what it is
  printf '\n### block %s: %s\n' "$1" "$2" >>"$LOGS/install.log"
  in_ct sh -euxc "cd $INSTALL_DIR && . ./block-$1.sh" >>"$LOGS/install.log" 2>&1 ||
    fail "docs/operations.md block $1 ($2) failed in the container: $(tail -5 "$LOGS/install.log" | tr '\n' ' ')"
}

# --- 1. install as docs/operations.md says, start → ready ---------------------------------------
ectl put /confsync/global/configmaps/default/app/greeting hello >/dev/null
t0=$(now_ms)
run_block 1 'step 2: install the tarball into /opt/confsync'
run_block 2 'step 3: the user'
run_block 3 'step 5: the identity'
run_block 4 'step 6: config + plan'
RECIPIENT="$(grep -o 'confsync1[0-9a-z]*' "$LOGS/install.log" | head -1)"
[ -n "$RECIPIENT" ] || fail "keygen printed no recipient (see $LOGS/install.log)"
[ "$(in_ct stat -c '%a %U' /etc/confsync/identity.key)" = "600 confsync" ] || fail "identity.key is not 0600 confsync"
run_block 5 'step 7: the unit, enable --now'
wait_ready 60 >/dev/null ||
  fail "not ready within 60 s: $(in_ct journalctl -u confsync --no-pager -n 20 2>&1)"
start_ms=$(( $(now_ms) - t0 ))
[ "$(in_ct systemctl is-active confsync)" = active ] || fail "confsync is not active"
[ "$(in_ct stat -c %U "/proc/$(main_pid)")" = confsync ] || fail "main process is not user confsync"
log "PASS install + start: the doc's steps 2-7 → /readyz ready in $(secs "$start_ms") s (main PID $(main_pid), user confsync)"

# --- 2. put → file --------------------------------------------------------------------------------
FILE="$ROOT/var/lib/confsync/configmaps/default/app/greeting"
[ "$(cat "$FILE" 2>/dev/null)" = hello ] || fail "the first sync did not write $FILE"
put_ms=()
for i in 1 2 3 4 5; do
  t0=$(now_ms)
  ectl put /confsync/global/configmaps/default/app/greeting "value-$i" >/dev/null
  until [ "$(cat "$FILE" 2>/dev/null)" = "value-$i" ]; do
    [ $(( $(now_ms) - t0 )) -lt 10000 ] || fail "put value-$i not in $FILE after 10 s"
    sleep 0.005
  done
  put_ms+=($(( $(now_ms) - t0 )))
done
log "PASS put → file: ${put_ms[*]} ms (5 puts, etcdctl put → new content in /var/lib/confsync)"

printf 's3cret-%s' "$$" >"$WORK/secret"
SECRET="$(cat "$WORK/secret")"
SECRET_FILE=/run/confsync/secrets/default/db/password
node "$REPO/dist/src/main.js" seal --recipient "$RECIPIENT" --path global/secrets/default/db/password \
  <"$WORK/secret" >"$WORK/envelope" || fail "confsync seal failed"
ectl put /confsync/global/secrets/default/db/password <"$WORK/envelope" >/dev/null
for _ in $(seq 1 200); do
  [ "$(in_ct cat "$SECRET_FILE" 2>/dev/null)" = "$SECRET" ] && break
  sleep 0.05
done
[ "$(in_ct cat "$SECRET_FILE" 2>/dev/null)" = "$SECRET" ] ||
  fail "sealed secret not opened into $SECRET_FILE: $(in_ct journalctl -u confsync --no-pager -n 10 2>&1)"
mode="$(in_ct stat -L -c '%a %U' "$SECRET_FILE")"
[ "$mode" = "400 confsync" ] || fail "secret file is '$mode', want '400 confsync'"
log "PASS secret: sealed put → $SECRET_FILE ($mode), identity read in the sandbox"

# --- 3. stop / start / restart / upgrade keep the files ---------------------------------------------
files_in_place() { # $1 expected config value; $2 what
  [ "$(cat "$FILE" 2>/dev/null)" = "$1" ] || fail "$2: $FILE is '$(cat "$FILE" 2>/dev/null)', want '$1'"
  [ "$(in_ct cat "$SECRET_FILE" 2>/dev/null)" = "$SECRET" ] || fail "$2: $SECRET_FILE is gone or changed"
}
in_ct systemctl stop confsync
[ "$(in_ct systemctl is-active confsync)" = inactive ] || fail "confsync is not inactive after systemctl stop"
ready && fail "/readyz still answers after systemctl stop"
files_in_place value-5 'while stopped'
in_ct systemctl start confsync
wait_ready 60 >/dev/null || fail "not ready within 60 s of systemctl start"
files_in_place value-5 'after systemctl start'
old=$(main_pid)
t0=$(now_ms)
in_ct systemctl restart confsync
wait_ready 60 >/dev/null || fail "not ready within 60 s of systemctl restart"
restart_ms=$(( $(now_ms) - t0 ))
[ "$(main_pid)" != "$old" ] || fail "systemctl restart kept main PID $old"
files_in_place value-5 'after systemctl restart'
ectl put /confsync/global/configmaps/default/app/greeting after-restart >/dev/null
for _ in $(seq 1 200); do [ "$(cat "$FILE" 2>/dev/null)" = after-restart ] && break; sleep 0.05; done
files_in_place after-restart 'a put after systemctl restart'
log "PASS stop keeps files and secrets; start, restart (ready in $(secs "$restart_ms") s) converge again"
run_block 6 'Upgrade: stop, swap /opt/confsync, start'
wait_ready 60 >/dev/null || fail "not ready within 60 s of the upgrade block"
files_in_place after-restart 'after the upgrade'
in_ct test -d /opt/confsync.old/dist/src || fail "the upgrade block left no /opt/confsync.old"
log "PASS upgrade (the doc's block): files and secrets kept, ready again"

# Identity backup → key lost → restore (the doc's blocks), then a secret sealed to the same
# recipient afterwards must open.
run_block 7 'Identities: back up'
in_ct rm /etc/confsync/identity.key
run_block 8 'Identities: restore'
wait_ready 60 >/dev/null || fail "not ready within 60 s of the identity restore"
[ "$(in_ct stat -c '%a %U' /etc/confsync/identity.key)" = "600 confsync" ] || fail "restored identity.key is not 0600 confsync"
printf 'after-restore-%s' "$$" >"$WORK/secret2"
node "$REPO/dist/src/main.js" seal --recipient "$RECIPIENT" --path global/secrets/default/db/password \
  <"$WORK/secret2" >"$WORK/envelope2" || fail "confsync seal failed"
ectl put /confsync/global/secrets/default/db/password <"$WORK/envelope2" >/dev/null
for _ in $(seq 1 200); do [ "$(in_ct cat "$SECRET_FILE" 2>/dev/null)" = "$(cat "$WORK/secret2")" ] && break; sleep 0.05; done
[ "$(in_ct cat "$SECRET_FILE" 2>/dev/null)" = "$(cat "$WORK/secret2")" ] ||
  fail "a secret sealed after the identity restore did not open: $(in_ct journalctl -u confsync --no-pager -n 10 2>&1)"
SECRET="$(cat "$WORK/secret2")"
log "PASS identity backup → deleted → restored (the doc's blocks): 0600 confsync, a new sealed secret opens"

# The host install's check step from an operator's seat: status --wait against the same etcd.
t0=$(now_ms)
node "$REPO/dist/src/main.js" status --wait --timeout 30 --endpoints "$ENDPOINT" >"$WORK/status" 2>&1 ||
  fail "confsync status --wait: $(cat "$WORK/status")"
grep -q 'all 1 node(s) have applied' "$WORK/status" || fail "confsync status --wait: $(cat "$WORK/status"), want 'all 1 node(s) have applied …'"
wait_s="$(secs $(( $(now_ms) - t0 )))"
node "$REPO/dist/src/main.js" status --endpoints "$ENDPOINT" >"$WORK/status-list" 2>&1 || fail "confsync status: $(cat "$WORK/status-list")"
grep -q systemd-test "$WORK/status-list" || fail "confsync status lists no node of cluster systemd-test: $(cat "$WORK/status-list")"
log "PASS confsync status --wait (from the host): exit 0 in $wait_s s, '$(grep -o 'all 1 node.*' "$WORK/status")'; status lists cluster systemd-test"

# --- 4. SIGKILL → Restart= ----------------------------------------------------------------------------
# Each start above counts against StartLimitBurst=5 in 120 s: an operator's reset-failed clears it.
in_ct systemctl reset-failed confsync
restarts0="$(in_ct systemctl show -p NRestarts --value confsync)"
kill_ms=()
for i in 1 2 3; do
  old=$(main_pid)
  t0=$(now_ms)
  in_ct systemctl kill -s KILL confsync
  # Ready again only counts once a new main process serves it.
  while :; do
    pid=$(main_pid)
    if [ "$pid" != 0 ] && [ "$pid" != "$old" ] && ready; then break; fi
    [ $(( $(now_ms) - t0 )) -lt 30000 ] || fail "not restarted and ready 30 s after SIGKILL: $(in_ct systemctl status --no-pager confsync 2>&1 | tail -15)"
    sleep 0.02
  done
  kill_ms+=($(( $(now_ms) - t0 )))
done
restarts="$(in_ct systemctl show -p NRestarts --value confsync)"
[ "$restarts" = $(( restarts0 + 3 )) ] || fail "NRestarts=$restarts after 3 SIGKILLs, want $(( restarts0 + 3 ))"
log "PASS SIGKILL → restarted by Restart=on-failure (RestartSec=2s) and ready: $(for m in "${kill_ms[@]}"; do printf '%s s ' "$(secs "$m")"; done)(NRestarts $restarts0 → $restarts)"

# --- 5. journalctl -u confsync, and the doc's jq recipe on it -------------------------------------------
in_ct journalctl -u confsync --no-pager -o cat >"$WORK/unit-journal" 2>&1
grep -q '"msg":' "$WORK/unit-journal" || fail "journalctl -u confsync has no daemon log line"
killed="$(grep -c 'Main process exited, code=killed, status=9/KILL' "$WORK/unit-journal" || true)"
[ "$killed" = 3 ] || fail "journal shows $killed SIGKILL exits, want 3"
grep -q 'Scheduled restart job' "$WORK/unit-journal" || fail "journal shows no 'Scheduled restart job'"
for v in "$(cat "$WORK/secret")" "$(cat "$WORK/secret2")"; do
  if grep -qF "$v" "$WORK/unit-journal"; then fail "a secret value is in the journal"; fi
done
# Troubleshooting's two jq recipes, their `journalctl …` replaced by the journal just read.
mapfile -t recipes < <(awk '/^## Troubleshooting/ { t = 1 } t && /^journalctl -u confsync -o cat .*\| jq / { print } t && /^Logs are JSON/ { exit }' "$DOC")
[ "${#recipes[@]}" = 2 ] || fail "want 2 'journalctl -u confsync -o cat … | jq' recipes under Troubleshooting in docs/operations.md, found ${#recipes[@]}"
jq_out=""
for recipe in "${recipes[@]}"; do
  out="$(bash -c "cat \"\$1\" | ${recipe#*| }" _ "$WORK/unit-journal" 2>&1)" || fail "the doc's jq recipe failed on the real journal: ${recipe#*| }: $out"
  jq_out+="$out"$'\n'
done
printf '%s' "$jq_out" | grep -q '^first full sync' || fail "the doc's jq recipes printed no 'first full sync' line: $jq_out"
log "PASS journal: $(grep -c '"msg":' "$WORK/unit-journal") daemon lines, $killed × status=9/KILL + 'Scheduled restart job', no secret value; jq recipes → $(printf '%s' "$jq_out" | grep -c .) lines"

# --- 6. a bad config field → failed, exit 2, one journal line ------------------------------------------
cp "$ROOT/etc/confsync/config.yaml" "$WORK/config.good"
sed -i 's/^  endpoints:/  endpoint: [http:\/\/127.0.0.1:1]\n  endpoints:/' "$ROOT/etc/confsync/config.yaml"
grep -q '^  endpoint:' "$ROOT/etc/confsync/config.yaml" || fail "could not break the config"
in_ct systemctl restart confsync || true
for _ in $(seq 1 100); do [ "$(in_ct systemctl is-failed confsync || true)" = failed ] && break; sleep 0.1; done
[ "$(in_ct systemctl is-failed confsync || true)" = failed ] || fail "a config with an unknown field: unit is $(in_ct systemctl is-active confsync || true), want failed"
status="$(in_ct systemctl show -p ExecMainStatus --value confsync)"
[ "$status" = 2 ] || fail "a config with an unknown field: exit status $status, want 2"
# RestartSec=2s: no restart may follow. (A manual restart zeroes NRestarts, so compare after.)
restarts0="$(in_ct systemctl show -p NRestarts --value confsync)"
sleep 3
[ "$(in_ct systemctl show -p NRestarts --value confsync)" = "$restarts0" ] &&
  [ "$(in_ct systemctl is-failed confsync || true)" = failed ] || fail "a refused config was restarted (RestartPreventExitStatus=2)"
bad_pid="$(in_ct systemctl show -p ExecMainPID --value confsync)"
in_ct journalctl --no-pager -o cat "_PID=$bad_pid" >"$WORK/bad-journal"
[ "$(wc -l <"$WORK/bad-journal")" = 1 ] || fail "a refused config logged $(wc -l <"$WORK/bad-journal") lines, want 1: $(cat "$WORK/bad-journal")"
grep -q 'etcd\.endpoint' "$WORK/bad-journal" || fail "the refused config's line does not name etcd.endpoint: $(cat "$WORK/bad-journal")"
log "PASS bad config: unit failed, status=2, not restarted; journal: $(cat "$WORK/bad-journal")"
cp "$WORK/config.good" "$ROOT/etc/confsync/config.yaml"
in_ct systemctl reset-failed confsync
in_ct systemctl start confsync
wait_ready 60 >/dev/null || fail "not ready within 60 s after the config was fixed"
files_in_place after-restart 'after the config was fixed'

# --- 7. the sandbox ------------------------------------------------------------------------------------------
# confsync.service's own file, ExecStart swapped for a write probe: the same sandbox, user
# and directories, under the same systemd.
in_ct sh -c 'install -d -o confsync -g confsync /srv/owned-by-confsync /opt/owned-by-confsync &&
  mkdir -p /home/someone && chown confsync /home/someone'
cat >"$ROOT/usr/local/bin/confsync-sandbox-probe" <<'EOF'
#!/bin/sh
# path, what the sandbox should do; creates (or, for a file, opens for append) and removes.
probe() {
  if [ -d "$1" ]; then target="$1/.sandbox-probe"; op='>'; else target="$1"; op='>>'; fi
  if err=$(eval ": $op \"\$target\"" 2>&1); then got=allowed; [ "$op" = '>' ] && rm -f "$target"
  else got="refused: ${err##*: }"; fi
  printf '%s|%s|%s\n' "$1" "$2" "$got"
}
probe /var/lib/confsync allowed
probe /var/lib/confsync/configmaps allowed
probe /run/confsync/secrets allowed
probe /tmp allowed
probe /etc/confsync/identity.key refused
probe /etc/confsync/config.yaml refused
probe /etc/confsync refused
probe /etc refused
probe /opt/confsync/dist/src refused
probe /usr/bin refused
probe /var/lib refused
probe /srv/owned-by-confsync refused
probe /opt/owned-by-confsync refused
probe /home/someone refused
probe /root refused
probe /run refused
probe /dev/shm refused
EOF
chmod 0755 "$ROOT/usr/local/bin/confsync-sandbox-probe"
sed -e 's|^ExecStart=.*|ExecStart=/usr/local/bin/confsync-sandbox-probe|' -e 's|^Type=.*|Type=oneshot|' \
  -e 's|^Restart=.*|Restart=no|' -e '/^\[Install\]/,$d' \
  "$ROOT/etc/systemd/system/confsync.service" >"$ROOT/etc/systemd/system/confsync-probe.service"
# The probe unit's [Service] must be confsync.service's apart from those three lines.
diff <(grep -vE '^(ExecStart|Type|Restart)=' "$ROOT/etc/systemd/system/confsync.service" | sed '/^\[Install\]/,$d') \
     <(grep -vE '^(ExecStart|Type|Restart)=' "$ROOT/etc/systemd/system/confsync-probe.service") >/dev/null ||
  fail "the probe unit differs from confsync.service beyond ExecStart/Type/Restart"
in_ct systemctl daemon-reload
in_ct systemctl start confsync-probe || fail "the probe unit failed: $(in_ct journalctl -u confsync-probe --no-pager -n 20 2>&1)"
in_ct journalctl -u confsync-probe --no-pager -o cat | grep '|' >"$WORK/probe"
[ -s "$WORK/probe" ] || fail "the probe printed nothing"
bad=0
printf '  %-36s %-8s %s\n' path expected got >&2
while IFS='|' read -r path want got; do
  mark=ok; case "$got" in "$want"*) ;; *) mark=WRONG; bad=1 ;; esac
  printf '  %-36s %-8s %-40s %s\n' "$path" "$want" "$got" "$mark" >&2
done <"$WORK/probe"
[ "$(wc -l <"$WORK/probe")" -ge 17 ] || fail "the probe printed $(wc -l <"$WORK/probe") of 17 lines"
[ "$bad" = 0 ] || fail "the sandbox allows or refuses other paths than it should (table above)"
[ "$(in_ct cat /var/lib/confsync/configmaps/default/app/greeting)" = after-restart ] || fail "the probe disturbed the files root"
log "PASS sandbox: writable only the files root, the secrets root and a private /tmp"

log "OK in $(secs $(( $(now_ms) - T_START ))) s: install + start → ready $(secs "$start_ms") s; restart → ready $(secs "$restart_ms") s; put → file ${put_ms[*]} ms; SIGKILL → ready $(for m in "${kill_ms[@]}"; do printf '%s ' "$(secs "$m")"; done)s"
