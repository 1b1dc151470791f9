#!/usr/bin/env bash
# The least-privilege etcd user and role for one cluster's confsync daemons
# (docs/etcd-rbac.md). Prints the etcdctl commands; with --apply, runs them.
#
#   scripts/etcd-rbac.sh CLUSTER [PREFIX] [--apply] [--password-file FILE | --no-password]
#
# Role confsync-<CLUSTER> may:
#   read       PREFIX/global/               what every cluster applies
#   read       PREFIX/clusters/<CLUSTER>/   this cluster's overrides, nothing of other clusters
#   read       PREFIX/recipients/           public keys only
#   readwrite  PREFIX/status/<CLUSTER>/     each node's lease-bound status key
# and nothing else: no write to any config or secret, no other cluster's scope.
#
# The new user's password is read by etcdctl from --password-file (default
# /etc/confsync/etcd-password, the path in config.example.yaml) on stdin, never
# from the command line. --no-password makes a user for TLS client-certificate
# auth instead (the certificate's CN must be confsync-<CLUSTER>).
#
# etcdctl finds etcd and the *admin* credentials in its own environment:
#   ETCDCTL_ENDPOINTS, ETCDCTL_USER (root or another user with the root role),
#   ETCDCTL_PASSWORD, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY.
# --apply is idempotent: an existing role or user is kept (its password is not
# changed) and the grants are applied again.
set -euo pipefail

usage() {
  sed -n '5p' "$0" | sed 's/^# *//' >&2
  echo "run with --help for details" >&2
  exit 2
}

apply=0
password_file=/etc/confsync/etcd-password
no_password=0
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --apply) apply=1 ;;
    --password-file) [ $# -ge 2 ] || usage; password_file=$2; shift ;;
    --password-file=*) password_file=${1#*=} ;;
    --no-password) no_password=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "etcd-rbac: unknown option $1" >&2; usage ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -ge 1 ] && [ ${#positional[@]} -le 2 ] || usage
cluster=${positional[0]}
prefix=${positional[1]:-/confsync}

# The same rules confsync applies (src/source/keys.ts, src/config/schema.ts).
if ! [[ $cluster =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
  echo "etcd-rbac: cluster \"$cluster\" must be a DNS-1123 label (lowercase letters, digits, \"-\", at most 63)" >&2
  exit 2
fi
# Stricter than confsync's own prefix rule, so the printed commands are safe to paste into a shell.
if ! [[ $prefix =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$ ]]; then
  echo "etcd-rbac: prefix \"$prefix\" must start with \"/\", not end with \"/\", and use only letters, digits, \".\", \"_\", \"-\" and \"/\"" >&2
  exit 2
fi

name="confsync-$cluster"
ctl=${ETCDCTL_BIN:-etcdctl}
grants=(
  "read $prefix/global/"
  "read $prefix/clusters/$cluster/"
  "read $prefix/recipients/"
  "readwrite $prefix/status/$cluster/"
)

auth_snippet() {
  if [ "$no_password" -eq 1 ]; then
    echo "etcd.tls: { ca: …, cert: <certificate with CN=$name>, key: … } (no etcd.auth)"
  else
    echo "etcd.auth: { username: $name, passwordFile: $password_file }"
  fi
}

if [ "$apply" -eq 0 ]; then
  echo "# etcd role and user for the confsync daemons of cluster $cluster (prefix $prefix)."
  echo "# Run as an etcd admin (ETCDCTL_USER=root …), or re-run this script with --apply."
  echo "$ctl role add $name"
  for g in "${grants[@]}"; do echo "$ctl role grant-permission $name ${g%% *} --prefix=true ${g#* }"; done
  if [ "$no_password" -eq 1 ]; then
    echo "$ctl user add $name --no-password    # TLS client-certificate auth: certificate CN=$name"
  else
    echo "$ctl user add $name --interactive=false < $password_file    # the password: first line of the file"
  fi
  echo "$ctl user grant-role $name $name"
  echo "# daemon config: $(auth_snippet)"
  exit 0
fi

if [ "$no_password" -eq 0 ] && ! [ -r "$password_file" ]; then
  echo "etcd-rbac: cannot read the password file $password_file (create it first, mode 0600, one line)" >&2
  exit 2
fi

run() {
  echo "+ $*" >&2
  "$@"
}

if "$ctl" role get "$name" >/dev/null 2>&1; then
  echo "etcd-rbac: role $name exists; granting again" >&2
else
  run "$ctl" role add "$name"
fi
for g in "${grants[@]}"; do run "$ctl" role grant-permission "$name" "${g%% *}" --prefix=true "${g#* }"; done
if "$ctl" user get "$name" >/dev/null 2>&1; then
  echo "etcd-rbac: user $name exists; its password is left as it is (etcdctl user passwd $name to change it)" >&2
elif [ "$no_password" -eq 1 ]; then
  run "$ctl" user add "$name" --no-password
else
  # etcdctl reads the password from stdin with --interactive=false: it never appears in argv.
  echo "+ $ctl user add $name --interactive=false < $password_file" >&2
  "$ctl" user add "$name" --interactive=false <"$password_file"
fi
run "$ctl" user grant-role "$name" "$name"
echo "etcd-rbac: $name ready; daemon config: $(auth_snippet)" >&2
