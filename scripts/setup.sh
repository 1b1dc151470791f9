#!/usr/bin/env bash
# Installs what confsync needs and is missing, then builds it. Idempotent.
#  - Debian's etcd (server + etcdctl) and python3-nacl (the envelope interop test)
#  - npm packages (npm ci) and the TypeScript build (dist/)
#  - kubectl (Debian) and a kube-apiserver binary (scripts/kube-apiserver.sh) for the Kubernetes tests
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
/usr/bin/python3 -c 'import nacl.bindings' >/dev/null 2>&1 || need_apt+=(python3-nacl)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)                 # the kube-apiserver harness's certificates
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)         # the unit's security score test
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need_apt[*]} (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
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
