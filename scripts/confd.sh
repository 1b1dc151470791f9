#!/usr/bin/env bash
# Prints the path of a confd binary on stdout (and nothing else); progress goes to
# stderr. Used only by bench/confd.ts, to compare confsync with confd's etcd watch
# on the same etcd, machine and run. Idempotent and safe to run concurrently.
#
# Resolution order:
#   1. $CONFD_BIN, if executable.
#   2. ${CONFSYNC_CACHE:-$HOME/.cache/confsync}/confd-<module>-<version>/confd (cached).
#   3. Build it from the Go module proxy into that cache dir (never into the repo): a
#      throw-away wrapper module (under the cache dir) requires the confd module at a
#      pinned version and `go build`s its main package. First the maintained fork
#      github.com/abtreece/confd (newest version first), else the original
#      github.com/kelseyhightower/confd.
#
#   Why a wrapper module and pinned versions rather than `go install pkg@latest`: the
#   proxy this project reaches answers 403 (not 404) for version lists and for some
#   versions. `go install .../cmd/confd@v` first probes the module path
#   ".../cmd/confd" and stops at that 403; `@latest` and go install's deprecation
#   check both read the version list. Measured here: abtreece/confd v0.31.1 … v0.41.1
#   answer 403, v0.30.0 builds (about 45 s from a cold module cache);
#   kelseyhightower/confd v0.16.0 has no go.mod and its imports resolve to today's
#   hashicorp/consul/api, which needs a newer Go than 1.26.8.
#
# Prints the exact `go` errors on stderr and exits 1 when nothing can be built.
#
# Environment:
#   CONFD_VERSIONS         abtreece/confd versions to try, in order (default below)
#   CONFD_LEGACY_VERSION   kelseyhightower/confd version (default below)
#   CONFSYNC_CACHE         cache root (default $HOME/.cache/confsync)
#   GO                     go binary (default: `go` on PATH, else /usr/local/go/bin/go)
set -euo pipefail

FORK_VERSIONS="${CONFD_VERSIONS:-v0.41.1 v0.30.0}"
LEGACY_VERSION="${CONFD_LEGACY_VERSION:-v0.16.0}"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"

log() { printf 'confd.sh: %s\n' "$*" >&2; }

if [[ -n "${CONFD_BIN:-}" && -x "${CONFD_BIN}" ]]; then
  printf '%s\n' "$CONFD_BIN"
  exit 0
fi

candidates=()
for v in $FORK_VERSIONS; do candidates+=("abtreece-${v}"); done
candidates+=("kelseyhightower-${LEGACY_VERSION}")
for v in "${candidates[@]}"; do
  if [[ -x "${CACHE}/confd-${v}/confd" ]]; then
    printf '%s\n' "${CACHE}/confd-${v}/confd"
    exit 0
  fi
done

GO_BIN="${GO:-}"
if [[ -z "$GO_BIN" ]]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO_BIN=/usr/local/go/bin/go
  else log "no cached confd and no Go toolchain to build one (set CONFD_BIN or install Go)"; exit 1
  fi
fi

# build <label> <module> <version> <main package>: ${CACHE}/confd-<label>/confd
build() {
  local label="$1" module="$2" version="$3" pkg="$4"
  local dest_dir="${CACHE}/confd-${label}"
  mkdir -p "$dest_dir"
  exec 9>"${dest_dir}/.lock"
  if ! flock -n 9; then
    log "another process is building confd ${label}; waiting for it"
    flock 9
  fi
  if [[ -x "${dest_dir}/confd" ]]; then
    printf '%s\n' "${dest_dir}/confd"
    return 0
  fi
  local work start
  work="$(mktemp -d "${CACHE}/confd-build.XXXXXX")"
  printf 'module confsync.local/confd-build\n\ngo 1.22.0\n\nrequire %s %s\n' "$module" "$version" > "$work/go.mod"
  log "building ${module}@${version} with $("$GO_BIN" version)"
  start=$(date +%s)
  # Outside the repo, no workspace, no cgo; stamp the version as confd's release build does.
  if (cd "$work" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local \
      "$GO_BIN" build -trimpath -ldflags="-s -w -X main.Version=${version#v}" -o "$work/confd" "$pkg") 2>"$work/err"; then
    mv -f "$work/confd" "${dest_dir}/confd"
    rm -rf "$work"
    log "built ${dest_dir}/confd in $(( $(date +%s) - start )) s"
    printf '%s\n' "${dest_dir}/confd"
    return 0
  fi
  log "building ${module}@${version} failed:"
  grep -v '^go: downloading ' "$work/err" | tail -n 20 >&2
  rm -rf "$work"
  rm -f "${dest_dir}/.lock"; rmdir "$dest_dir" 2>/dev/null || true
  return 1
}

mkdir -p "$CACHE"
for v in $FORK_VERSIONS; do
  build "abtreece-${v}" github.com/abtreece/confd "$v" github.com/abtreece/confd/cmd/confd && exit 0
done
build "kelseyhightower-${LEGACY_VERSION}" github.com/kelseyhightower/confd "$LEGACY_VERSION" github.com/kelseyhightower/confd && exit 0
log "no confd could be built (errors above)"
exit 1
