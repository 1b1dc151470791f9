#!/usr/bin/env bash
# Installs what confsync needs and is missing, then builds it. Idempotent.
#  - Debian's etcd (server + etcdctl) and python3-nacl (the envelope interop test)
#  - npm packages (npm ci) and the TypeScript build (dist/)
#  - with --test only: what the test suite needs besides — python3-nacl, openssl,
#    systemd-analyze, jq, chromium (apt); a kube-apiserver and kubectl (scripts/kube-apiserver.sh)
#    for the Kubernetes tests and etcd 3.6 (scripts/etcd.sh) for `npm test`'s etcd 3.6
#    suites, each from the cache (~/.cache/confsync) or built once from Go modules. When
#    one is neither cached nor buildable (no Go), it exits 1 with one line naming them.
#  Usage: scripts/setup.sh            (enough for `npx confsync dev`)
#         scripts/setup.sh --test     (enough for `npm test`)
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) for_tests=1 ;;
    *) echo "setup: unknown argument $arg (usage: scripts/setup.sh [--test])" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
if [ "$for_tests" = 1 ]; then
  /usr/bin/python3 -c 'import nacl.bindings' >/dev/null 2>&1 || need_apt+=(python3-nacl)  # the envelope interop test
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)                 # the kube-apiserver harness's certificates
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)         # the unit's security score test
  command -v flock >/dev/null 2>&1 || need_apt+=(util-linux)                # the Go build scripts' lock
  command -v jq >/dev/null 2>&1 || need_apt+=(jq)                           # docs/operations.md's log recipes (test/ops-docs.test.ts)
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)                           # the console's browser tests (test/console.test.ts, via playwright-core)
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -L node_modules ]; then
  # A git worktree sharing another checkout's packages: npm ci would empty the link's target.
  echo "setup: node_modules is a link to $(readlink node_modules); leaving it alone (run npm ci there)" >&2
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
if [ "$for_tests" = 0 ]; then
  echo "setup: ready for \`npx confsync dev\` ($(etcd --version | head -1), node $(node --version)); \`scripts/setup.sh --test\` adds what the tests need" >&2
  exit 0
fi
# Test-only binaries: cached, else built once from Go modules (minutes; the kube-apiserver
# measured 3-17 min on 2 cores). Without Go, whatever is not cached is named and setup fails.
have_go=0
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then have_go=1; fi
missing=()
# Prints the binary's path. Exit 1: not cached and no Go (quiet); exit 2: a build failed.
resolve() {
  if [ "$have_go" = 1 ]; then
    PATH="$PATH:/usr/local/go/bin" "$@" || { echo "setup: '$*' failed (its errors are above)" >&2; return 2; }
  else
    "$@" 2>/dev/null || return 1
  fi
}
need() { # $1 what; the rest: the script
  local what="$1" rc=0; shift
  resolved="$(resolve "$@")" || rc=$?
  [ "$rc" != 2 ] || exit 1
  [ "$rc" = 0 ] || missing+=("$what")
  return "$rc"
}
if [ "${CONFSYNC_SKIP_ETCD36:-}" != "1" ]; then
  need "etcd 3.6 (scripts/etcd.sh)" bash scripts/etcd.sh || true
fi
if [ "${CONFSYNC_SKIP_KUBE:-}" != "1" ]; then
  need "kube-apiserver (scripts/kube-apiserver.sh)" bash scripts/kube-apiserver.sh || true
  # kubectl: the one on PATH (another image's package), else the same build's, linked onto
  # PATH. (Debian bookworm has none: its kubernetes-client is 1.20, far outside the skew policy.)
  if ! command -v kubectl >/dev/null 2>&1 && need "kubectl (scripts/kube-apiserver.sh kubectl)" bash scripts/kube-apiserver.sh kubectl; then
    $SUDO ln -sf "$resolved" /usr/local/bin/kubectl
    echo "setup: kubectl → $resolved (/usr/local/bin/kubectl)" >&2
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  list="$(printf '%s, ' "${missing[@]}")"
  echo "setup: npm test needs ${list%, }: not in ${CONFSYNC_CACHE:-$HOME/.cache/confsync} and no Go to build them (install Go >= 1.26 from go.dev/dl, Debian's golang-go 1.19 is too old; or skip those tests with CONFSYNC_SKIP_KUBE=1 CONFSYNC_SKIP_ETCD36=1)" >&2
  exit 1
fi
echo "setup: ready ($(etcd --version | head -1), node $(node --version))" >&2
