#!/usr/bin/env bash
# Packs a root filesystem directory into a one-layer docker-archive image tarball that
# `ctr -n k8s.io images import` (and `docker load`) take: no registry and no Docker engine.
#
#   scripts/image-archive.sh ROOTFS_DIR NAME:TAG OUT.tar [CONFIG_JSON]
#
# CONFIG_JSON is the image's "config" object (the Dockerfile's USER, ENV, WORKDIR,
# ENTRYPOINT, CMD), e.g. '{"User":"10001:10001","Entrypoint":["node"]}'; default '{}'.
# The layer is the tree as it is on disk, owners and modes kept (run as root to read all).
set -euo pipefail
ROOTFS="$1"; REF="$2"; OUT="$3"; CONFIG="${4:-"{}"}"
[[ -d "$ROOTFS" ]] || { printf 'image-archive.sh: %s is not a directory\n' "$ROOTFS" >&2; exit 2; }
stage="$(mktemp -d "${TMPDIR:-/tmp}/image-archive.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
# --numeric-owner: the image's uids are the tree's, whatever this host's /etc/passwd says.
tar --numeric-owner --xattrs --sort=name -C "$ROOTFS" -cf "$stage/layer.tar" .
layer_sha="$(sha256sum "$stage/layer.tar" | cut -d' ' -f1)"
mkdir "$stage/$layer_sha"
mv "$stage/layer.tar" "$stage/$layer_sha/layer.tar"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '{"architecture":"amd64","os":"linux","created":"%s","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$created" "$CONFIG" "$layer_sha" > "$stage/config.json"
config_sha="$(sha256sum "$stage/config.json" | cut -d' ' -f1)"
mv "$stage/config.json" "$stage/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config_sha" "$REF" "$layer_sha" > "$stage/manifest.json"
tar -C "$stage" -cf "$OUT" manifest.json "$config_sha.json" "$layer_sha"
printf '%s\n' "$OUT"
