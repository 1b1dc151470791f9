#!/usr/bin/env bash
# Installs what confsync needs and is missing, then builds it. Idempotent.
#  - Debian's etcd (server + etcdctl) and python3-nacl (the envelope interop test)
#  - npm packages (npm ci) and the TypeScript build (dist/)
#  - with --test only: what the test suite needs besides — a kube-apiserver binary
#    (scripts/kube-apiserver.sh) for the Kubernetes tests and etcd 3.6 (scripts/etcd.sh)
#    for `npm run test:etcd36`, each built once from Go modules and cached.
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
  command -v jq >/dev/null 2>&1 || need_apt+=(jq)                           # docs/operations.md's log recipes (test/ops-docs.test.ts)
fi
if [ ${#need_apt[@]} -gt 0 ] || { [ "$for_tests" = 1 ] && ! command -v kubectl >/dev/null 2>&1; }; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian bookworm has no kubectl package (other images do): install it where apt has one.
  if [ "$for_tests" = 1 ] && ! command -v kubectl >/dev/null 2>&1; then
    if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then need_apt+=(kubectl)
    else echo "setup: WARNING: apt has no kubectl here (Debian bookworm ships none); test/kubernetes.test.ts and test/kube-harness.test.ts need one on PATH" >&2; fi
  fi
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
if [ "$for_tests" = 0 ]; then
  echo "setup: ready for \`npx confsync dev\` ($(etcd --version | head -1), node $(node --version)); \`scripts/setup.sh --test\` adds what the tests need" >&2
  exit 0
fi
# etcd 3.6 for `npm run test:etcd36` (built once from Go modules, ~2-4 min): skip with CONFSYNC_SKIP_ETCD36=1.
if [ "${CONFSYNC_SKIP_ETCD36:-}" != "1" ] && { command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; }; then PATH="$PATH:/usr/local/go/bin" bash scripts/etcd.sh >/dev/null; fi

# A real kube-apiserver for the Kubernetes sink's tests: from $KUBEBUILDER_ASSETS, the
# cache (~/.cache/confsync), or built once from Go modules (3-6 min on 2 cores).
if [ "${CONFSYNC_SKIP_KUBE:-}" != "1" ]; then
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] || command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
    PATH="$PATH:/usr/local/go/bin" bash scripts/kube-apiserver.sh >/dev/null
  else
    echo "setup: no Go toolchain and no KUBEBUILDER_ASSETS: the Kubernetes tests need a kube-apiserver (install Go, point KUBEBUILDER_ASSETS at envtest binaries, or set CONFSYNC_SKIP_KUBE=1)" >&2
  fi
fi
echo "setup: ready ($(etcd --version | head -1), node $(node --version))" >&2
