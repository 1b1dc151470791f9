#!/usr/bin/env bash
# Prints the path of a clean Debian bookworm root filesystem (debootstrap, minbase + systemd)
# on stdout and nothing else; progress goes to stderr. Built once into the cache and reused:
# callers copy it (`cp -a`) and never change the cached tree itself.
#   scripts/test-systemd.sh   boots a copy with systemd-nspawn -b (the unit under a real systemd)
#   scripts/fresh-debian.sh   runs the README's set-up in a copy (a fresh Debian)
#
# Needs root and Debian's `debootstrap` (installed with apt-get when missing). The mirror is
# the one this machine's apt uses (the first deb URI in /etc/apt/sources.list{,.d}), or
# $DEBIAN_MIRROR. The rootfs holds no Node.js: callers put in the host's own (Node >= 20 is
# the README's precondition; Debian 12 ships 18).
#
# Environment:
#   CONFSYNC_CACHE  cache root (default $HOME/.cache/confsync); the tree is
#                   $CONFSYNC_CACHE/rootfs-bookworm, its log $CONFSYNC_CACHE/debootstrap.log.
#   DEBIAN_MIRROR   a Debian mirror URL (default: the host's apt source).
set -euo pipefail

CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"
ROOTFS="$CACHE/rootfs-bookworm"
LOG="$CACHE/debootstrap.log"
# systemd as PID 1 needs systemd-sysv and dbus (systemctl, journalctl, logind);
# ca-certificates and openssl for npm over TLS.
INCLUDE=systemd,systemd-sysv,dbus,ca-certificates,openssl

log() { printf 'debian-rootfs.sh: %s\n' "$*" >&2; }

# A tree from an earlier version of this script had no marker: its log tells whether it completed.
if [ ! -f "$ROOTFS/.confsync-rootfs-complete" ] && [ -x "$ROOTFS/usr/lib/systemd/systemd" ] &&
   tail -n 1 "$LOG" 2>/dev/null | grep -q 'Base system installed successfully'; then
  touch "$ROOTFS/.confsync-rootfs-complete"
fi
if [ -f "$ROOTFS/.confsync-rootfs-complete" ]; then
  echo "$ROOTFS"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  log "debootstrap needs root (run as root or with sudo)"
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # deb822 (URIs: ...) or one-line (deb URL suite ...) sources.
  mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')"
  [ -n "$mirror" ] || mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" && $2 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}')"
fi
if [ -z "$mirror" ]; then
  log "no Debian mirror found in /etc/apt/sources.list{,.d}: set DEBIAN_MIRROR"
  exit 1
fi

mkdir -p "$CACHE"
tmp="$ROOTFS.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
log "debootstrap bookworm from $mirror into $ROOTFS (once, 1-3 min; log: $LOG)"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$tmp" "$mirror" >"$LOG" 2>&1; then
  log "debootstrap failed; the end of $LOG:"
  tail -n 15 "$LOG" >&2
  exit 1
fi
# A container gets its hostname from systemd-nspawn --machine; no leftovers of the host.
rm -f "$tmp/etc/hostname"
apt-get clean -o Dir="$tmp" >/dev/null 2>&1 || rm -rf "$tmp"/var/cache/apt/archives/*.deb
touch "$tmp/.confsync-rootfs-complete"
rm -rf "$ROOTFS"
mv "$tmp" "$ROOTFS"
trap - EXIT
log "rootfs ready in $(( $(date +%s) - start )) s"
echo "$ROOTFS"
