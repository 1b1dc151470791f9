#!/usr/bin/env bash
# Prints the directory holding `etcd` and `etcdctl` of a current etcd release on stdout
# (and nothing else). Progress goes to stderr. Idempotent and safe to run concurrently.
# Debian ships etcd 3.4; users run 3.5/3.6, so the fault suites also run against this
# build (`npm run test:etcd36`).
#
# Resolution order:
#   1. ${CONFSYNC_CACHE:-$HOME/.cache/confsync}/etcd-<version>/{etcd,etcdctl}
#   2. Build both from the Go module proxy: a throw-away wrapper module (under the cache
#      dir, never in the repo) requires go.etcd.io/etcd/server/v3@<version> (a
#      `package main`: the server) and go.etcd.io/etcd/etcdctl/v3@<version>; `go mod tidy`
#      resolves the rest; two `go build`s. Nothing fetched is kept besides the binaries.
#
# Environment:
#   ETCD_VERSION    etcd version to build (default below; v3.5.x / v3.7.x are served too).
#   CONFSYNC_CACHE  cache root (default $HOME/.cache/confsync).
#   GO              go binary (default: `go` on PATH, else /usr/local/go/bin/go).
#   GOMODCACHE, GOCACHE, GOPROXY  honoured as usual.
set -euo pipefail

VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"

log() { printf 'etcd.sh: %s\n' "$*" >&2; }

case "$VERSION" in
  v3.[0-9]*.[0-9]*) ;;
  *) log "ETCD_VERSION must look like v3.X.Y, got '$VERSION'"; exit 2 ;;
esac

DEST_DIR="${CACHE}/etcd-${VERSION}"

# 1. cached binaries
if [[ -x "${DEST_DIR}/etcd" && -x "${DEST_DIR}/etcdctl" ]]; then
  printf '%s\n' "$DEST_DIR"
  exit 0
fi

# 2. build
mkdir -p "$DEST_DIR"
# Serialise concurrent builders (parallel test files, several checkouts sharing a cache).
exec 9>"${DEST_DIR}/.lock"
if ! flock -n 9; then
  log "another process is building etcd ${VERSION}; waiting for it"
  flock 9
fi
if [[ -x "${DEST_DIR}/etcd" && -x "${DEST_DIR}/etcdctl" ]]; then
  printf '%s\n' "$DEST_DIR"
  exit 0
fi

GO_BIN="${GO:-}"
if [[ -z "$GO_BIN" ]]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO_BIN=/usr/local/go/bin/go
  else log "no cached etcd ${VERSION} and no Go toolchain to build one (install Go)"; exit 1
  fi
fi

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off
# Never let the repo (or a parent go.work/go.mod) influence the build.
WORK="$(mktemp -d "${CACHE}/build-etcd-${VERSION}.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

start=$(date +%s)
log "building etcd ${VERSION} with $("$GO_BIN" version) (one-off; ~4 min on 2 cores from cold caches)"

# The server module's own replace directives forbid `go install mod@version`; a wrapper
# module that merely requires both main packages builds them with the published versions.
cat > go.mod <<EOF
module confsync.local/etcd-build

go 1.24

require (
	go.etcd.io/etcd/server/v3 ${VERSION}
	go.etcd.io/etcd/etcdctl/v3 ${VERSION}
)
EOF
# Blank imports keep both modules (and their dependencies) in the graph for `go mod tidy`.
cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
EOF
"$GO_BIN" mod tidy >&2

ldflags="-s -w"
log "go build go.etcd.io/etcd/server/v3"
"$GO_BIN" build -trimpath -ldflags="$ldflags" -o "${WORK}/etcd" go.etcd.io/etcd/server/v3
log "go build go.etcd.io/etcd/etcdctl/v3"
"$GO_BIN" build -trimpath -ldflags="$ldflags" -o "${WORK}/etcdctl" go.etcd.io/etcd/etcdctl/v3

"${WORK}/etcd" --version >&2
mv -f "${WORK}/etcdctl" "${DEST_DIR}/etcdctl"
mv -f "${WORK}/etcd" "${DEST_DIR}/etcd"
end=$(date +%s)
log "built ${DEST_DIR}/{etcd,etcdctl} in $((end - start)) s"
printf '%s\n' "$DEST_DIR"
