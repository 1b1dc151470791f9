#!/usr/bin/env bash
# Prints the path of a kube-apiserver binary on stdout (and nothing else).
# Progress goes to stderr. Idempotent and safe to run concurrently.
#
#   scripts/kube-apiserver.sh            the kube-apiserver (the Kubernetes sink's tests)
#   scripts/kube-apiserver.sh kubectl    kubectl of the same version, built and cached the
#                                        same way (Debian bookworm has no kubectl package);
#                                        $KUBEBUILDER_ASSETS/kubectl first, as envtest ships one
#   scripts/kube-apiserver.sh kubelet    likewise the kubelet, kube-controller-manager and
#                                        kube-scheduler: the real node of scripts/test-node.sh
#
# Resolution order:
#   1. $KUBEBUILDER_ASSETS/kube-apiserver (envtest convention), if executable.
#   2. ${CONFSYNC_CACHE:-$HOME/.cache/confsync}/kube-apiserver-<version>/kube-apiserver
#   3. Build it from the Go module proxy: a throw-away wrapper module (under the
#      cache dir, never in the repo) requires k8s.io/kubernetes@<version> and
#      replaces every k8s.io staging module with the matching v0.<minor>.<patch>.
#      The staging list is read from kubernetes' own go.mod, not hardcoded.
#
# Environment:
#   KUBE_APISERVER_VERSION  Kubernetes version to build (default below).
#   CONFSYNC_CACHE          cache root (default $HOME/.cache/confsync).
#   GO                      go binary (default: `go` on PATH, else /usr/local/go/bin/go).
#   GOMODCACHE, GOCACHE, GOPROXY  honoured as usual.
set -euo pipefail

COMPONENT="${1:-kube-apiserver}"
case "$COMPONENT" in
  kube-apiserver|kubectl|kubelet|kube-controller-manager|kube-scheduler) ;;
  *) printf 'kube-apiserver.sh: unknown component %s (kube-apiserver, kubectl, kubelet, kube-controller-manager or kube-scheduler)\n' "$COMPONENT" >&2; exit 2 ;;
esac

# Pinned: newest k8s.io/kubernetes the module proxy serves that builds with Go 1.26 and
# passes test/kube-harness.test.ts (v1.34.4 also passes). Debian's kubectl 1.32 works
# against it but prints a version-skew WARNING on stderr (skew policy is +/-1 minor).
VERSION="${KUBE_APISERVER_VERSION:-v1.37.2}"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"

log() { printf 'kube-apiserver.sh: %s\n' "$*" >&2; }

# 1. envtest assets
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/${COMPONENT}" && ! -d "${KUBEBUILDER_ASSETS}/${COMPONENT}" ]]; then
  printf '%s\n' "${KUBEBUILDER_ASSETS}/${COMPONENT}"
  exit 0
fi

case "$VERSION" in
  v1.[0-9]*.[0-9]*) ;;
  *) log "KUBE_APISERVER_VERSION must look like v1.X.Y, got '$VERSION'"; exit 2 ;;
esac

DEST_DIR="${CACHE}/${COMPONENT}-${VERSION}"
DEST="${DEST_DIR}/${COMPONENT}"

# 2. cached binary
if [[ -x "$DEST" ]]; then
  printf '%s\n' "$DEST"
  exit 0
fi

# 3. build
mkdir -p "$DEST_DIR"
# Serialise concurrent builders (parallel test files, several checkouts sharing a cache).
exec 9>"${DEST_DIR}/.lock"
if ! flock -n 9; then
  log "another process is building ${COMPONENT} ${VERSION}; waiting for it"
  flock 9
fi
if [[ -x "$DEST" ]]; then
  printf '%s\n' "$DEST"
  exit 0
fi

GO_BIN="${GO:-}"
if [[ -z "$GO_BIN" ]]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO_BIN=/usr/local/go/bin/go
  else log "no ${COMPONENT} found and no Go toolchain to build one (set KUBEBUILDER_ASSETS or install Go)"; exit 1
  fi
fi

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off
# Never let the repo (or a parent go.work/go.mod) influence the build.
WORK="$(mktemp -d "${CACHE}/build-${VERSION}.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

start=$(date +%s)
log "building ${COMPONENT} ${VERSION} with $("$GO_BIN" version) (one-off; kube-apiserver measured 3-17 min on 2 cores from cold module and build caches)"
log "downloading k8s.io/kubernetes@${VERSION} from ${GOPROXY:-$("$GO_BIN" env GOPROXY)}"

# `go mod download -json` prints {"GoMod": "<path to the module's go.mod>", ...}
dl_json="$("$GO_BIN" mod download -json "k8s.io/kubernetes@${VERSION}")"
k8s_gomod="$(printf '%s\n' "$dl_json" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' | head -n1)"
if [[ -z "$k8s_gomod" || ! -f "$k8s_gomod" ]]; then
  log "could not locate go.mod of k8s.io/kubernetes@${VERSION}; go said:"
  printf '%s\n' "$dl_json" >&2
  exit 1
fi

# Staging modules are the ones kubernetes replaces with ./staging/src/<path>.
mapfile -t staging < <("$GO_BIN" mod edit -json "$k8s_gomod" \
  | tr -d ' \t\r\n' \
  | grep -o '"Old":{"Path":"[^"]*"},"New":{"Path":"\./staging/src/' \
  | sed 's/^"Old":{"Path":"\([^"]*\)".*/\1/' | sort -u || true)
if [[ ${#staging[@]} -eq 0 ]]; then
  # Fallback: plain-text parse of `k8s.io/x => ./staging/src/k8s.io/x`.
  mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 }' "$k8s_gomod" | sort -u)
fi
if [[ ${#staging[@]} -eq 0 ]]; then
  log "found no staging replace directives in $k8s_gomod"; exit 1
fi
staging_version="v0.${VERSION#v1.}"
log "pinning ${#staging[@]} staging modules to ${staging_version}"

go_directive="$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")"
{
  printf 'module confsync.local/kube-apiserver-build\n\n'
  printf 'go %s\n\n' "${go_directive:-1.24}"
  printf 'require k8s.io/kubernetes %s\n\n' "$VERSION"
  printf 'replace (\n'
  for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
  printf ')\n'
} > go.mod

minor="${VERSION#v1.}"; minor="${minor%%.*}"
commit="$(printf '%s\n' "$dl_json" | sed -n 's/^[[:space:]]*"Hash":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' | head -n1)"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
# Same version stamping as kubernetes' hack/lib/version.sh; without it /version reports
# v0.0.0-master+$Format:%H$ and clients warn about skew against a bogus version.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  [[ -n "$commit" ]] && ldflags+=" -X ${pkg}.gitCommit=${commit}"
done

log "go build k8s.io/kubernetes/cmd/${COMPONENT}"
"$GO_BIN" build -trimpath -ldflags="$ldflags" -o "${WORK}/${COMPONENT}" "k8s.io/kubernetes/cmd/${COMPONENT}"

if [[ "$COMPONENT" == kubectl ]]; then "${WORK}/kubectl" version --client >&2; else "${WORK}/${COMPONENT}" --version >&2; fi
mv -f "${WORK}/${COMPONENT}" "$DEST"
end=$(date +%s)
log "built $DEST in $((end - start)) s ($(du -h "$DEST" | cut -f1))"
printf '%s\n' "$DEST"
