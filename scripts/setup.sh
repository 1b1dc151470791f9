#!/usr/bin/env bash
# Installs what confsync needs and is missing, then builds it. Idempotent.
#  - Debian's etcd (server + etcdctl) and python3-nacl (the envelope interop test)
#  - npm packages (npm ci) and the TypeScript build (dist/)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
/usr/bin/python3 -c 'import nacl.bindings' >/dev/null 2>&1 || need_apt+=(python3-nacl)
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
echo "setup: ready ($(etcd --version | head -1), node $(node --version))" >&2
