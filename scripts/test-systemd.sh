#!/usr/bin/env bash
# The unit under a real systemd (`npm run test:systemd`; opt-in, not part of `npm test`).
#
# A copy of a Debian bookworm rootfs (scripts/debian-rootfs.sh, cached) gets the host's
# Node.js, confsync installed as docs/operations.md "Install on a host" says (npm pack →
# `npm install -g`, useradd, keygen, config, the unit), and is booted with
# `systemd-nspawn -b` (systemd 252 as PID 1 of its own PID namespace; the host network,
# so it reaches a real etcd this script starts on the host loopback). Driven with nsenter
# (this machine's PID 1 is not systemd, so no machinectl / systemd-run -M). Checks:
#   1. `systemctl daemon-reload && systemctl enable --now confsync` → /readyz says ready;
#   2. a config put with etcdctl → the file under /var/lib/confsync; a sealed secret →
#      its 0400 file under /run/confsync/secrets (so the identity is readable);
#   3. `systemctl kill -s KILL confsync` → a new main PID started by Restart=, ready again;
#   4. `journalctl -u confsync` holds the daemon's log lines and systemd's restart;
#   5. the sandbox: a unit with confsync.service's exact [Service] sandbox runs a write
#      probe: the files root and secrets root are writable, everything else is not
#      (identity, /etc, /usr, /home, /root, /srv, /opt, /var/lib).
# Prints the times (start → ready, put → file, SIGKILL → ready again) and exits non-zero
# on the first failed check. Logs are kept in $CONFSYNC_CACHE/systemd-test/.
#
# Needs root, systemd-nspawn (Debian's systemd-container, installed when missing), etcd and
# etcdctl (scripts/setup.sh), npm registry access (or a warm npm cache) and ~600 MB in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"
LOGS="$CACHE/systemd-test"
MACHINE="confsync-test-$$"

log() { printf 'test-systemd: %s\n' "$*" >&2; }
fail() { printf 'test-systemd: FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, systemd-nspawn, nsenter)"
if ! command -v systemd-nspawn >/dev/null 2>&1; then
  log "installing systemd-container (apt-get) for systemd-nspawn"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null
fi
for tool in etcd etcdctl curl nsenter npm; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (scripts/setup.sh installs etcd; apt-get install curl util-linux)"
done
NODE_BIN="$(readlink -f "$(command -v node)")"
NPM_DIR="$(dirname "$(readlink -f "$(command -v npm)")")/.."
[ -f "$NPM_DIR/package.json" ] || fail "npm's own directory not found from $(command -v npm)"

ROOTFS_CACHE="$(bash scripts/debian-rootfs.sh)"
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/confsync-systemd.XXXXXX")"
ROOT="$WORK/root"
mkdir -p "$LOGS" "$CACHE/npm-cache"
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
  [ "$rc" -eq 0 ] || log "logs: $LOGS/{console.log,journal.log,etcd.log,install.log}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run a command inside the booted container: all its namespaces, a clean environment.
in_ct() { nsenter -t "$INIT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

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

# --- the host: a rootfs copy with Node.js and the packed app --------------------------------
log "copying the rootfs ($ROOTFS_CACHE)"
cp -a "$ROOTFS_CACHE" "$ROOT"
rm -f "$ROOT/etc/hostname"
# Node.js >= 20 is a precondition of docs/operations.md (Debian 12 ships 18): the host's
# node binary and npm, where a NodeSource-style package puts them.
install -m 0755 "$NODE_BIN" "$ROOT/usr/bin/node"
mkdir -p "$ROOT/usr/lib/node_modules"
cp -a "$(readlink -f "$NPM_DIR")" "$ROOT/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/bin/npx"
log "npm pack (build + tarball)"
(npm pack --silent --pack-destination "$WORK" >/dev/null 2>"$LOGS/install.log") || fail "npm pack failed (see $LOGS/install.log)"
TARBALL="$(ls "$WORK"/confsync-*.tgz)"
cp "$TARBALL" "$ROOT/opt/"

cat >"$ROOT/opt/config.yaml" <<EOF
cluster: systemd-test
etcd:
  endpoints: [$ENDPOINT]
identity: /etc/confsync/identity.key
sinks:
  files: { root: /var/lib/confsync, secretsRoot: /run/confsync/secrets }
metrics: { listen: 127.0.0.1:$METRICS_PORT }
EOF

# docs/operations.md "Install on a host (systemd)", steps 2, 3, 5, 6 and 7 (the unit file),
# run in the container before it boots.
cat >"$ROOT/opt/install.sh" <<'EOF'
set -eux
npm install -g --no-audit --no-fund --loglevel=error /opt/confsync-*.tgz
test "$(readlink -f /usr/bin/confsync)" = /usr/lib/node_modules/confsync/dist/src/main.js
useradd --system --user-group --home-dir /var/lib/confsync --no-create-home --shell /usr/sbin/nologin confsync
install -d -m 0755 /etc/confsync
confsync keygen --out /etc/confsync/identity.key > /opt/recipient
chown confsync:confsync /etc/confsync/identity.key
install -m 0640 -o root -g confsync /opt/config.yaml /etc/confsync/config.yaml
install -m 0644 /usr/lib/node_modules/confsync/systemd/confsync.service /etc/systemd/system/
EOF
log "installing confsync in the container (npm install -g, useradd, keygen, config, unit)"
t0=$(now_ms)
# The host's CA bundle: where the registry is reached through a TLS-inspecting proxy, the
# rootfs's stock bundle makes npm retry SELF_SIGNED_CERT_IN_CHAIN for ever (no error shown).
systemd-nspawn -q --register=no --keep-unit -D "$ROOT" --bind="$CACHE/npm-cache:/root/.npm" \
  --bind-ro=/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt \
  /bin/sh /opt/install.sh >>"$LOGS/install.log" 2>&1 || fail "install in the container failed (see $LOGS/install.log)"
log "installed in $(secs $(( $(now_ms) - t0 ))) s"
RECIPIENT="$(grep -o 'confsync1[0-9a-z]*' "$ROOT/opt/recipient" | head -1)"
[ -n "$RECIPIENT" ] || fail "keygen printed no recipient: $(cat "$ROOT/opt/recipient")"

# --- boot ------------------------------------------------------------------------------------
log "booting with systemd-nspawn -b"
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
state="$(timeout 120 nsenter -t "$INIT_PID" -a env -i PATH=/usr/bin:/bin systemctl is-system-running --wait 2>&1 || true)"
case "$state" in running|degraded) ;; *) fail "container did not finish booting: '$state'" ;; esac
[ "$state" = running ] || log "container is $state: $(in_ct systemctl --failed --no-legend --plain | tr '\n' ';')"
log "booted: $(in_ct systemctl --version | head -1) as PID 1 (host PID $INIT_PID), system $state"

ready() { [ "$(curl -s --max-time 1 "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null)" = ready ]; }
wait_ready() { # $1 timeout s; prints ms to ready
  local start deadline; start=$(now_ms); deadline=$(( start + $1 * 1000 ))
  until ready; do [ "$(now_ms)" -lt "$deadline" ] || return 1; sleep 0.02; done
  echo $(( $(now_ms) - start ))
}
main_pid() { in_ct systemctl show -p MainPID --value confsync; }

# --- 1. start → ready ---------------------------------------------------------------------------
ectl put /confsync/global/configmaps/default/app/greeting hello >/dev/null
t0=$(now_ms)
in_ct sh -c 'systemctl daemon-reload && systemctl enable --now confsync' >/dev/null 2>&1 ||
  fail "systemctl enable --now confsync: $(in_ct systemctl status --no-pager confsync 2>&1 | tail -20)"
wait_ready 60 >/dev/null ||
  fail "not ready within 60 s: $(in_ct journalctl -u confsync --no-pager -n 20 2>&1)"
start_ms=$(( $(now_ms) - t0 ))
[ "$(in_ct systemctl is-active confsync)" = active ] || fail "confsync is not active"
[ "$(in_ct stat -c %U "/proc/$(main_pid)")" = confsync ] || fail "main process is not user confsync"
log "PASS start: enable --now → /readyz ready in $(secs "$start_ms") s (main PID $(main_pid), user confsync)"

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
node "$REPO/dist/src/main.js" seal --recipient "$RECIPIENT" --path global/secrets/default/db/password \
  <"$WORK/secret" >"$WORK/envelope" || fail "confsync seal failed"
ectl put /confsync/global/secrets/default/db/password <"$WORK/envelope" >/dev/null
for _ in $(seq 1 200); do
  [ "$(in_ct cat /run/confsync/secrets/default/db/password 2>/dev/null)" = "$(cat "$WORK/secret")" ] && break
  sleep 0.05
done
[ "$(in_ct cat /run/confsync/secrets/default/db/password 2>/dev/null)" = "$(cat "$WORK/secret")" ] ||
  fail "sealed secret not opened into /run/confsync/secrets/default/db/password: $(in_ct journalctl -u confsync --no-pager -n 10 2>&1)"
mode="$(in_ct stat -L -c '%a %U' /run/confsync/secrets/default/db/password)"
[ "$mode" = "400 confsync" ] || fail "secret file is '$mode', want '400 confsync'"
log "PASS secret: sealed put → /run/confsync/secrets/default/db/password ($mode), identity read in the sandbox"

# --- 3. SIGKILL → Restart= ----------------------------------------------------------------------------
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
[ "$restarts" = 3 ] || fail "NRestarts=$restarts after 3 SIGKILLs, want 3"
log "PASS SIGKILL → restarted by Restart=on-failure (RestartSec=2s) and ready: $(for m in "${kill_ms[@]}"; do printf '%s s ' "$(secs "$m")"; done)(NRestarts=$restarts)"

# --- 4. journalctl -u confsync ----------------------------------------------------------------------------
in_ct journalctl -u confsync --no-pager -o cat >"$WORK/unit-journal" 2>&1
grep -q '"msg":' "$WORK/unit-journal" || fail "journalctl -u confsync has no daemon log line"
killed="$(grep -c 'Main process exited, code=killed, status=9/KILL' "$WORK/unit-journal" || true)"
[ "$killed" = 3 ] || fail "journal shows $killed SIGKILL exits, want 3"
grep -q 'Scheduled restart job' "$WORK/unit-journal" || fail "journal shows no 'Scheduled restart job'"
if grep -q "$(cat "$WORK/secret")" "$WORK/unit-journal"; then fail "the secret value is in the journal"; fi
log "PASS journal: $(grep -c '"msg":' "$WORK/unit-journal") daemon lines, $killed × status=9/KILL + 'Scheduled restart job', no secret value"

# --- 5. the sandbox ------------------------------------------------------------------------------------------
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
probe /usr/lib/node_modules/confsync refused
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
[ "$(in_ct cat /var/lib/confsync/configmaps/default/app/greeting)" = value-5 ] || fail "the probe disturbed the files root"
log "PASS sandbox: writable only the files root, the secrets root and a private /tmp"

log "OK: start → ready $(secs "$start_ms") s; put → file ${put_ms[*]} ms; SIGKILL → ready $(for m in "${kill_ms[@]}"; do printf '%s ' "$(secs "$m")"; done)s"
