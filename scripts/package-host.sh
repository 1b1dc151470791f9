#!/usr/bin/env bash
# Builds the host install tarball (docs/operations.md "Install on a host", step 1) and prints
# its path on stdout; progress goes to stderr.
#
#   scripts/package-host.sh [OUT_DIR]    → OUT_DIR/confsync-<version>-opt.tgz (default: .)
#
# The tarball is the /opt/confsync tree: package.json, dist/src, systemd/, docs/, and the
# production node_modules installed with `npm ci --omit=dev` from package-lock.json (the
# exact versions CI tested). Its contents are plain JavaScript and WebAssembly, no native
# addon, so it runs on any Linux host of the same Node.js major (>= 20). Only the build
# machine needs the npm registry: the host never runs npm.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

log() { printf 'package-host: %s\n' "$*" >&2; }

version="$(node -p 'require("./package.json").version')"
stage="$(mktemp -d "${TMPDIR:-/tmp}/confsync-package.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

log "npm pack (builds dist/ first)"
npm pack --silent --pack-destination "$stage" >/dev/null
mkdir "$stage/confsync"
tar -xzf "$stage/confsync-$version.tgz" -C "$stage/confsync" --strip-components=1
# npm pack leaves the lockfile out; the production install must use it.
cp package-lock.json "$stage/confsync/"
log "npm ci --omit=dev (package-lock.json's versions)"
(cd "$stage/confsync" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
chmod 0755 "$stage/confsync/dist/src/main.js"
tarball="$OUT/confsync-$version-opt.tgz"
tar -czf "$tarball" --owner=0 --group=0 -C "$stage/confsync" .
log "$(du -h "$tarball" | cut -f1) $tarball"
printf '%s\n' "$tarball"
