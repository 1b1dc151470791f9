#!/usr/bin/env bash
# Runs the suites that exercise etcd itself (source, catch-up, outage, cluster, crash) against a
# current etcd (v3.6.16 by default, built once by scripts/etcd.sh) instead of Debian's
# 3.4. Used by `npm run test:etcd36`; expects `npm run build` to have run.
#   ETCD_VERSION=v3.6.16  which build to use;  extra args go to node --test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CONFSYNC_SKIP_ETCD36:-}" = "1" ]; then echo "test-etcd36: skipped (CONFSYNC_SKIP_ETCD36=1)" >&2; exit 0; fi
dir="$(PATH="$PATH:/usr/local/go/bin" bash scripts/etcd.sh)"
export CONFSYNC_ETCD_BIN="$dir/etcd" CONFSYNC_ETCDCTL_BIN="$dir/etcdctl"
echo "test-etcd36: $("$CONFSYNC_ETCD_BIN" --version | head -1)" >&2
start=$(date +%s)
node --test --test-concurrency=1 "$@" \
  dist/test/source-etcd.test.js dist/test/fault/catchup-order.test.js dist/test/fault/catchup-transient.test.js dist/test/fault/outage.test.js dist/test/fault/cluster.test.js dist/test/fault/crash.test.js
echo "test-etcd36: $(( $(date +%s) - start )) s" >&2
