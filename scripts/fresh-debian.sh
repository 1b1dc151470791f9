#!/usr/bin/env bash
# The README's two Quick start commands, literally, on a fresh Debian 12 (bookworm):
# each in its own copy of a clean debootstrapped rootfs (scripts/debian-rootfs.sh, cached)
# run with systemd-nspawn (host network: apt, the npm registry and the Go proxy as this
# machine reaches them), holding only what the README presumes — Node.js >= 20 (this
# host's node and npm, where NodeSource's package puts them) — and a `git clone` of this
# checkout's HEAD (uncommitted changes are not in it).
#
#   run    `./scripts/setup.sh && npx confsync dev` from nothing: timed until the daemon's
#          first full sync; then the printed `export CONFSYNC_…` line is eval'd and
#          `printf s3cret | npx confsync secret set default/db/password` must land in
#          .confsync/out/secrets/default/db/password, an etcdctl put in .confsync/out/configmaps.
#   test   `./scripts/setup.sh --test` (the first half of the test command; `npm test` itself
#          is CI's job, not run here), twice, each timed on a fresh copy:
#          - no Go and no cache (a fresh Debian): must exit 1 with one line naming what is missing;
#          - this host's cache of Go builds (~/.cache/confsync, read-only: no rebuild) and
#            still no Go: must exit 0 with etcd 3.6, the kube-apiserver and kubectl in place
#            (kubectl linked onto PATH), checked by running each.
#   all    both (default).
#
# Prints the times; logs in $CONFSYNC_CACHE/fresh-debian/. Needs root, systemd-nspawn,
# ~1 GB in $TMPDIR. The machine's CA bundle is bound into each copy and NODE_EXTRA_CA_CERTS
# set, as this machine's own environment has them (the registries are reached through a
# TLS-inspecting proxy; without its CA npm retries SELF_SIGNED_CERT_IN_CHAIN for ever).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"
LOGS="$CACHE/fresh-debian"
WHAT="${1:-all}"
case "$WHAT" in run|test|all) ;; *) echo "usage: scripts/fresh-debian.sh [run|test|all]" >&2; exit 2 ;; esac

log() { printf 'fresh-debian: %s\n' "$*" >&2; }
fail() { printf 'fresh-debian: FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, systemd-nspawn)"
command -v systemd-nspawn >/dev/null 2>&1 || {
  log "installing systemd-container (apt-get) for systemd-nspawn"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null
}
[ -z "$(git status --porcelain --untracked-files=no)" ] || log "note: uncommitted changes are not in the clone (HEAD $(git rev-parse --short HEAD))"

# The README's two commands: the first two lines of Quick start's first sh block, comments cut.
mapfile -t readme < <(awk '/^## Quick start/ { q = 1 } q && /^```sh$/ { b = 1; next } b && /^```$/ { exit } b { sub(/[[:space:]]+#.*$/, ""); print }' README.md)
RUN_CMD="${readme[0]:-}"; TEST_CMD="${readme[1]:-}"
[ "$RUN_CMD" = './scripts/setup.sh && npx confsync dev' ] || fail "README's run command is now '$RUN_CMD': update this script"
[ "$TEST_CMD" = './scripts/setup.sh --test && npm test' ] || fail "README's test command is now '$TEST_CMD': update this script"

NODE_BIN="$(readlink -f "$(command -v node)")"
NPM_DIR="$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")"
[ -f "$NPM_DIR/package.json" ] || fail "npm's own directory not found from $(command -v npm)"
ROOTFS_CACHE="$(bash scripts/debian-rootfs.sh)"
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/confsync-fresh.XXXXXX")"
mkdir -p "$LOGS"
trap 'rm -rf "$WORK"' EXIT

machine() { # $1 name: a fresh rootfs copy with Node.js and a clone at /root/confsync
  local root="$WORK/$1"
  cp -a "$ROOTFS_CACHE" "$root"
  install -m 0755 "$NODE_BIN" "$root/usr/bin/node"
  mkdir -p "$root/usr/lib/node_modules"
  cp -a "$NPM_DIR" "$root/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
  git clone -q "$REPO" "$root/root/confsync"
}
ct() { # $1 machine, then extra nspawn options up to --, then the command (run in /root/confsync)
  local root="$WORK/$1"; shift
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
  systemd-nspawn -q --register=no --keep-unit --as-pid2 -D "$root" \
    --bind-ro=/etc/ssl/certs/ca-certificates.crt \
    --setenv=NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    --setenv=HOME=/root --setenv=LANG=C.UTF-8 --chdir=/root/confsync "${opts[@]}" "$@"
}

# --- the run command ----------------------------------------------------------------------------
if [ "$WHAT" != test ]; then
  machine run
  cat >"$WORK/run/root/run-command.sh" <<EOF
#!/bin/bash
set -u
cd /root/confsync
exec 3>/root/result   # the verdict, apart from npx's progress output
t0=\$(date +%s%N)
setsid bash -c '$RUN_CMD' >/root/run.log 2>&1 </dev/null &
pid=\$!
stop() { kill -INT -- -\$pid 2>/dev/null; for _ in \$(seq 1 100); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done; kill -KILL -- -\$pid 2>/dev/null; }
trap stop EXIT
until grep -q 'first full sync' /root/run.log; do
  kill -0 \$pid 2>/dev/null || { echo >&3 "RESULT exited before the first sync"; exit 1; }
  [ \$(( (\$(date +%s%N) - t0) / 1000000000 )) -lt 1200 ] || { echo >&3 "RESULT no first sync in 20 min"; exit 1; }
  sleep 0.2
done
echo >&3 "READY_MS \$(( (\$(date +%s%N) - t0) / 1000000 ))"
line="\$(grep -m1 '^export CONFSYNC_ENDPOINTS=' /root/run.log)"
[ -n "\$line" ] || { echo >&3 "RESULT dev printed no export line"; exit 1; }
eval "\$line"
printf s3cret | npx confsync secret set default/db/password || { echo >&3 "RESULT secret set failed"; exit 1; }
for _ in \$(seq 1 100); do [ "\$(cat .confsync/out/secrets/default/db/password 2>/dev/null)" = s3cret ] && break; sleep 0.1; done
[ "\$(cat .confsync/out/secrets/default/db/password 2>/dev/null)" = s3cret ] || { echo >&3 "RESULT the secret is not in .confsync/out/secrets/default/db/password"; exit 1; }
[ "\$(npx confsync secret get default/db/password)" = s3cret ] || { echo >&3 "RESULT secret get did not print it"; exit 1; }
etcdctl --endpoints "\$CONFSYNC_ENDPOINTS" put /confsync/global/configmaps/default/app/greeting hello >/dev/null
for _ in \$(seq 1 100); do [ "\$(cat .confsync/out/configmaps/default/app/greeting 2>/dev/null)" = hello ] && break; sleep 0.1; done
[ "\$(cat .confsync/out/configmaps/default/app/greeting 2>/dev/null)" = hello ] || { echo >&3 "RESULT the put is not in .confsync/out/configmaps/default/app/greeting"; exit 1; }
echo >&3 "RESULT ok"
EOF
  chmod +x "$WORK/run/root/run-command.sh"
  log "run command in a fresh bookworm: $RUN_CMD"
  ct run -- /root/run-command.sh >"$LOGS/run-output.log" 2>&1 || true
  cp "$WORK/run/root/run.log" "$LOGS/run.log" 2>/dev/null || true
  cp "$WORK/run/root/result" "$LOGS/run-result.log" 2>/dev/null || : >"$LOGS/run-result.log"
  grep -q '^RESULT ok' "$LOGS/run-result.log" ||
    fail "run command: $(grep '^RESULT' "$LOGS/run-result.log" || tail -5 "$LOGS/run-output.log") (see $LOGS/run.log)"
  RUN_MS="$(awk '/^READY_MS/ { print $2 }' "$LOGS/run-result.log")"
  log "PASS run command: first full sync $(secs "$RUN_MS") s after '$RUN_CMD' started on a fresh bookworm; the export line's secret set → .confsync/out/secrets, etcdctl put → .confsync/out/configmaps"
fi

# --- the test command's setup ---------------------------------------------------------------------
if [ "$WHAT" != run ]; then
  machine bare
  log "test command's setup, no Go and no cache: ./scripts/setup.sh --test"
  t0=$(now_ms); rc=0
  ct bare -- ./scripts/setup.sh --test >"$LOGS/test-bare.log" 2>&1 || rc=$?
  BARE_MS=$(( $(now_ms) - t0 ))
  [ "$rc" = 1 ] || fail "setup.sh --test without Go and cache exited $rc, want 1 (see $LOGS/test-bare.log)"
  # setup's own line (systemd-nspawn may print after it); npx/npm progress may precede it.
  last="$(grep -o 'setup: npm test needs.*' "$LOGS/test-bare.log" | tail -1)"
  for part in 'etcd 3.6' kube-apiserver kubectl; do
    case "$last" in *"$part"*) ;; *) fail "setup.sh --test's 'npm test needs' line does not name $part: '$last'" ;; esac
  done
  [ "$(grep -c 'setup: npm test needs' "$LOGS/test-bare.log")" = 1 ] || fail "want one 'setup: npm test needs' line (see $LOGS/test-bare.log)"
  log "PASS no Go, no cache: exit 1 after $(secs "$BARE_MS") s: $last"

  machine cached
  log "test command's setup, the cache of Go builds read-only, no Go: ./scripts/setup.sh --test"
  t0=$(now_ms); rc=0
  ct cached --bind-ro="$CACHE:/root/.cache/confsync" -- ./scripts/setup.sh --test >"$LOGS/test-cached.log" 2>&1 || rc=$?
  CACHED_MS=$(( $(now_ms) - t0 ))
  [ "$rc" = 0 ] || fail "setup.sh --test with the cache exited $rc: $(tail -3 "$LOGS/test-cached.log")"
  ct cached --bind-ro="$CACHE:/root/.cache/confsync" -- bash -c '
    set -e
    kubectl version --client
    "$(bash scripts/kube-apiserver.sh)" --version
    "$(bash scripts/etcd.sh)/etcd" --version | head -1
    etcd --version | head -1; python3 -c "import nacl.bindings"; jq --version; systemd-analyze --version | head -1' \
    >"$LOGS/test-cached-check.log" 2>&1 || fail "after setup.sh --test: $(tail -3 "$LOGS/test-cached-check.log")"
  log "PASS with the cache: exit 0 after $(secs "$CACHED_MS") s; $(grep -E 'Client Version|^Kubernetes|^etcd Version' "$LOGS/test-cached-check.log" | tr '\n' ';')"
fi
log "OK${RUN_MS:+: run command → first sync $(secs "$RUN_MS") s}${BARE_MS:+; setup --test without Go: exit 1 in $(secs "$BARE_MS") s}${CACHED_MS:+; setup --test with cached builds: $(secs "$CACHED_MS") s}"
