#!/usr/bin/env bash
# The DaemonSet on a real node (`npm run test:node`; opt-in: not in `npm test`, not in CI).
#
# One machine is the whole cluster: etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler (built from the Go module proxy by scripts/kube-apiserver.sh, cached), a
# real kubelet on containerd + runc (Debian's packages), pod networking by the CNI bridge
# plugin (Debian's containernetworking-plugins) on a bridge of its own. No registry: the
# image is assembled the way the Dockerfile's runtime stage lays it out (the cached
# debootstrap rootfs, this host's Node.js, /app from scripts/package-host.sh, uid 10001),
# packed by scripts/image-archive.sh and imported with `ctr -n k8s.io images import`.
# deploy/kubernetes is applied through an overlay, with the identity and etcd Secrets made
# as docs/operations.md ("Install in a Kubernetes cluster") says. Checks:
#   1. the DaemonSet pod becomes Ready (time from `kubectl apply -k`);
#   2. it runs as uid 10001 with a read-only root filesystem;
#   3. a put → the file inside a pod that mounts the hostPath, and → the ConfigMap inside a
#      pod that mounts it as a volume; a sealed secret → the Secret volume of that pod;
#   4. SIGKILL of the daemon → the kubelet restarts it, Ready again;
#   5. `kubectl delete pod` of the daemon → a new pod, Ready again.
#
# Needs root, cgroups (v1 or v2), iptables, etcd/etcdctl (scripts/setup.sh), Go (first run:
# builds and caches the Kubernetes binaries) and the npm registry or a warm npm cache.
# Uses the host's /var/lib/confsync and /run/confsync/secrets (the DaemonSet's hostPaths):
# refuses to run when either already has content. Logs: $CONFSYNC_CACHE/node-test/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CACHE="${CONFSYNC_CACHE:-${HOME}/.cache/confsync}"
LOGS="$CACHE/node-test"
NODE_NAME="confsync-node"
# The pods' network: a bridge of this script's own; the node's services listen on its
# gateway address so that pods reach them (nothing leaves this machine).
BRIDGE="cnfs0"
SUBNET="10.88.42.0/24"
GW="10.88.42.1"
SVC_CIDR="10.96.42.0/24"
SVC_IP="10.96.42.1" # the `kubernetes` Service: DNAT'ed to the apiserver below (no kube-proxy)
CHAIN="CONFSYNC-NODE-TEST"

PASSED=0
log() { case "$1" in PASS*) PASSED=$(( PASSED + 1 )) ;; esac; printf 'test-node: %s\n' "$*" >&2; }
fail() { printf 'test-node: FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
T_START=$(now_ms)

[ "$(id -u)" -eq 0 ] || fail "needs root (containerd, kubelet, mounts, iptables)"
need_pkgs=()
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need_pkgs+=(iptables)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]} (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
for tool in etcd etcdctl openssl python3 gcc; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (scripts/setup.sh --test installs etcd; apt-get install openssl python3 gcc)"
done
for d in /var/lib/confsync /run/confsync/secrets; do
  if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then fail "$d is not empty: this test projects into the host's $d (the DaemonSet's hostPath)"; fi
done

log "Kubernetes binaries (scripts/kube-apiserver.sh: cached, or built once from the Go module proxy)"
APISERVER="$(bash scripts/kube-apiserver.sh)"
KUBECTL_BIN="$(bash scripts/kube-apiserver.sh kubectl)"
KUBELET="$(bash scripts/kube-apiserver.sh kubelet)"
# CONFSYNC_NODE_TEST_UNTIL=node: stop once the kubelet's Node is Ready (no controller-manager
# or scheduler needed: a quick look at whether a kubelet runs on this machine at all).
UNTIL="${CONFSYNC_NODE_TEST_UNTIL:-}"
if [ "$UNTIL" != node ]; then
  KCM="$(bash scripts/kube-apiserver.sh kube-controller-manager)"
  SCHED="$(bash scripts/kube-apiserver.sh kube-scheduler)"
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/confsync-node.XXXXXX")"
chmod 0711 "$WORK"
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log
PIDS=()  # started here, stopped in reverse order
CREATED_DIRS=()
for d in /var/lib/confsync /run/confsync/secrets /run/confsync /var/log/containers; do [ -e "$d" ] || CREATED_DIRS+=("$d"); done

k() { "$KUBECTL_BIN" --kubeconfig "$WORK/admin.kubeconfig" "$@"; }
CTR() { ctr -a "$WORK/containerd/containerd.sock" -n k8s.io "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ -f "$WORK/admin.kubeconfig" ] && [ -n "${KUBELET_PID:-}" ]; then
    k get pods -A -o wide >"$LOGS/pods.log" 2>&1
    k get events -A >"$LOGS/events.log" 2>&1
    k -n confsync logs -l app.kubernetes.io/name=confsync --all-containers --prefix --tail=-1 >"$LOGS/daemon-last.log" 2>&1
    # The kubelet tears the pods down (containers, CNI, volumes) while it still runs.
    k delete namespace confsync confsync-test --wait=false >/dev/null 2>&1
    k delete pod -n default --all --grace-period=1 >/dev/null 2>&1
    for _ in $(seq 1 60); do
      [ -z "$(CTR tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  if [ -S "$WORK/containerd/containerd.sock" ]; then
    for t in $(CTR tasks ls -q 2>/dev/null); do CTR tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $(CTR tasks ls -q 2>/dev/null); do CTR tasks delete -f "$t" >/dev/null 2>&1; done
  fi
  # One at a time, newest first (the apiserver's shutdown waits for its etcd); 10 s each.
  local i pid
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    pid="${PIDS[$i]}"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Whatever the kubelet and containerd left mounted under the work dir (tmpfs of secret
  # volumes, the overlay rootfs, the netns bind mounts).
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ -n "${OWN_NET:-}" ]; then
    iptables -t nat -D PREROUTING -j "$CHAIN" 2>/dev/null
    iptables -t nat -D OUTPUT -j "$CHAIN" 2>/dev/null
    iptables -t nat -F "$CHAIN" 2>/dev/null; iptables -t nat -X "$CHAIN" 2>/dev/null
    ip link del "$BRIDGE" 2>/dev/null
  fi
  # The kubelet's links to the pods' logs (always in /var/log/containers).
  find /var/log/containers -maxdepth 1 -type l -lname "$WORK/*" -delete 2>/dev/null
  rm -rf "$WORK"
  for d in "${CREATED_DIRS[@]}"; do rm -rf "$d"; done
  [ "$rc" -eq 0 ] || log "logs: $LOGS/"
  printf 'test-node: %d passed, %d failed\n' "$PASSED" "$([ "$rc" -eq 0 ] && echo 0 || echo 1)" >&2
}
trap cleanup EXIT

# ---- PKI: one CA for etcd, the apiserver, the ServiceAccount tokens' issuer and clients.
log "PKI (openssl)"
P="$WORK/pki"; mkdir -m 0700 "$P"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=confsync-node-test-ca \
  -keyout "$P/ca.key" -out "$P/ca.crt"
cert() { # name subject san(or "") kind(server|client)
  local name="$1" subj="$2" san="$3" kind="$4" ext="$P/$1.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ "$kind" = server ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; else echo "extendedKeyUsage=clientAuth"; fi
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subj" -keyout "$P/$name.key" -out "$P/$name.csr"
  ossl x509 -req -in "$P/$name.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 2 -extfile "$ext" -out "$P/$name.crt"
}
cert apiserver /CN=kube-apiserver "IP:$GW,IP:127.0.0.1,IP:$SVC_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost" server
cert admin "/O=system:masters/CN=node-test-admin" "" client
cert etcd "/CN=confsync-etcd" "IP:$GW,IP:127.0.0.1" server
cert confsync-etcd-client "/CN=confsync-node-test" "" client
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$P/sa.key"
ossl pkey -in "$P/sa.key" -pubout -out "$P/sa.pub"

# ---- network: the pods' bridge, before anything listens on its address.
ip link add "$BRIDGE" type bridge 2>/dev/null || fail "ip link add $BRIDGE: the bridge exists already (another run?)"
OWN_NET=1  # from here on the bridge and the NAT chain are this run's to remove
ip addr add "$GW/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
mkdir -p "$WORK/cni/net.d"
cat >"$WORK/cni/net.d/10-confsync-test.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "confsync-test",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$SUBNET", "gateway": "$GW" }]],
                "dataDir": "$WORK/cni/ipam" } },
    { "type": "loopback" } ] }
EOF

# ---- etcd for Kubernetes (loopback) and for confsync (TLS with client certs, on the bridge).
KETCD_PORT=$(free_port); KETCD_PEER=$(free_port)
etcd --name k8s --data-dir "$WORK/etcd-k8s" --listen-client-urls "http://127.0.0.1:$KETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$KETCD_PORT" --listen-peer-urls "http://127.0.0.1:$KETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$KETCD_PEER" --initial-cluster "k8s=http://127.0.0.1:$KETCD_PEER" \
  --log-level error >"$LOGS/etcd-k8s.log" 2>&1 &
PIDS+=($!)
CETCD_PORT=$(free_port); CETCD_PEER=$(free_port)
etcd --name confsync --data-dir "$WORK/etcd-confsync" \
  --listen-client-urls "https://127.0.0.1:$CETCD_PORT,https://$GW:$CETCD_PORT" \
  --advertise-client-urls "https://$GW:$CETCD_PORT" --listen-peer-urls "http://127.0.0.1:$CETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$CETCD_PEER" --initial-cluster "confsync=http://127.0.0.1:$CETCD_PEER" \
  --cert-file "$P/etcd.crt" --key-file "$P/etcd.key" --client-cert-auth --trusted-ca-file "$P/ca.crt" \
  --log-level error >"$LOGS/etcd-confsync.log" 2>&1 &
PIDS+=($!)
ectl() { ETCDCTL_API=3 etcdctl --endpoints="https://127.0.0.1:$CETCD_PORT" --cacert "$P/ca.crt" --cert "$P/confsync-etcd-client.crt" --key "$P/confsync-etcd-client.key" "$@"; }

# ---- containerd (its own root, state and socket), with a pause image built here.
mkdir -p "$WORK/containerd"
capeff="$(awk '/^CapEff:/ { print $2 }' /proc/self/status)"   # CAP_SYS_RESOURCE is bit 24
if (( (16#$capeff >> 24) & 1 )); then RESTRICT_OOM=false; else RESTRICT_OOM=true; fi
cat >"$WORK/containerd/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
[grpc]
  address = "$WORK/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "confsync.test/pause:1"
  # Without CAP_SYS_RESOURCE (a container, as on the build machines) runc cannot lower a
  # pod's oom_score_adj below its own: runc init dies, "can't get final child's PID from
  # pipe: EOF". Clamp it to containerd's own instead.
  restrict_oom_score_adj = $RESTRICT_OOM
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni/net.d"
EOF
containerd --config "$WORK/containerd/config.toml" >"$LOGS/containerd.log" 2>&1 &
PIDS+=($!)

# ---- images, without a registry.
log "images: pause, busybox (test pods), confsync:0.1.0 (the Dockerfile's runtime stage)"
IMG="$WORK/img"; mkdir -p "$IMG/pause/rootfs" "$IMG/busybox/rootfs/bin" "$IMG/busybox/rootfs/etc"
cat >"$IMG/pause.c" <<'EOF'
/* The pod sandbox's process: sleeps until SIGTERM/SIGINT, reaps children. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction q = { .sa_handler = quit }, r = { .sa_handler = reap, .sa_flags = SA_NOCLDSTOP };
  sigaction(SIGINT, &q, 0); sigaction(SIGTERM, &q, 0); sigaction(SIGCHLD, &r, 0);
  for (;;) pause();
}
EOF
gcc -O2 -static -o "$IMG/pause/rootfs/pause" "$IMG/pause.c"
bash scripts/image-archive.sh "$IMG/pause/rootfs" confsync.test/pause:1 "$IMG/pause.tar" '{"Entrypoint":["/pause"],"User":"65535:65535"}' >/dev/null
cp /bin/busybox "$IMG/busybox/rootfs/bin/busybox"
for a in sh cat ls stat sleep id touch test; do ln -s busybox "$IMG/busybox/rootfs/bin/$a"; done
mkdir -p "$IMG/busybox/rootfs/tmp" "$IMG/busybox/rootfs/proc" "$IMG/busybox/rootfs/sys" "$IMG/busybox/rootfs/dev"
echo 'root:x:0:0:root:/:/bin/sh' >"$IMG/busybox/rootfs/etc/passwd"
bash scripts/image-archive.sh "$IMG/busybox/rootfs" confsync.test/busybox:1 "$IMG/busybox.tar" '{"Cmd":["sh"],"Env":["PATH=/bin"]}' >/dev/null

# confsync:0.1.0: the Dockerfile's runtime stage, laid out from a Debian rootfs instead of
# node:20-bookworm-slim (no registry): node at /usr/bin/node, /app = package.json +
# production node_modules + dist/src (scripts/package-host.sh: npm ci --omit=dev from the
# lockfile, as the Dockerfile's deps stage), the volume dirs owned by 10001, USER 10001.
R="$IMG/confsync/rootfs"; mkdir -p "$IMG/confsync"
cp -a "$(bash scripts/debian-rootfs.sh)" "$R"
rm -f "$R/.confsync-rootfs-complete"
install -m 0755 "$(readlink -f "$(command -v node)")" "$R/usr/bin/node"
TARBALL="$(bash scripts/package-host.sh "$IMG" 2>>"$LOGS/package-host.log")"
mkdir -p "$R/app"
tar -xzf "$TARBALL" -C "$R/app" ./package.json ./dist/src ./node_modules
mkdir -p "$R/var/lib/confsync" "$R/run/confsync" "$R/etc/confsync"
chown 10001:10001 "$R/var/lib/confsync" "$R/run/confsync"
chmod 0755 "$R/var/lib/confsync"; chmod 0750 "$R/run/confsync"
bash scripts/image-archive.sh "$R" confsync:0.1.0 "$IMG/confsync.tar" \
  '{"User":"10001:10001","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","NODE_ENV=production"],"WorkingDir":"/app","Entrypoint":["node","/app/dist/src/main.js"],"Cmd":["run","--config","/etc/confsync/config.yaml"]}' >/dev/null
for _ in $(seq 1 50); do CTR version >/dev/null 2>&1 && break; sleep 0.2; done
for t in pause busybox confsync; do CTR images import "$IMG/$t.tar" >>"$LOGS/ctr-import.log" 2>&1 || fail "ctr images import $t.tar: $(tail -n 3 "$LOGS/ctr-import.log")"; done
rm -rf "$R" "$IMG"/*.tar

# ---- kube-apiserver on the bridge address (pods reach it through the `kubernetes` Service).
log "kube-apiserver, kube-controller-manager, kube-scheduler"
API_PORT=$(free_port)
"$APISERVER" --etcd-servers="http://127.0.0.1:$KETCD_PORT" --secure-port="$API_PORT" \
  --bind-address="$GW" --advertise-address="$GW" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc --api-audiences=https://kubernetes.default.svc \
  --authorization-mode=Node,RBAC --service-cluster-ip-range="$SVC_CIDR" --allow-privileged=true \
  --profiling=false --v=1 >"$LOGS/kube-apiserver.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{ name: node-test, cluster: { server: "https://$GW:$API_PORT", certificate-authority: "$P/ca.crt" } }]
users: [{ name: admin, user: { client-certificate: "$P/admin.crt", client-key: "$P/admin.key" } }]
contexts: [{ name: node-test, context: { cluster: node-test, user: admin } }]
current-context: node-test
EOF
for _ in $(seq 1 300); do k get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
k get --raw /readyz >/dev/null 2>&1 || fail "kube-apiserver not ready: $(tail -n 5 "$LOGS/kube-apiserver.log")"
# No kube-proxy: the one Service the pods need, `kubernetes` (in-cluster config), by hand.
iptables -t nat -N "$CHAIN"
iptables -t nat -A "$CHAIN" -d "$SVC_IP" -p tcp --dport 443 -j DNAT --to-destination "$GW:$API_PORT"
iptables -t nat -I PREROUTING -j "$CHAIN"
iptables -t nat -I OUTPUT -j "$CHAIN"

if [ "$UNTIL" != node ]; then
  "$KCM" --kubeconfig="$WORK/admin.kubeconfig" --authentication-kubeconfig="$WORK/admin.kubeconfig" \
    --authorization-kubeconfig="$WORK/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
    --secure-port="$(free_port)" --root-ca-file="$P/ca.crt" --service-account-private-key-file="$P/sa.key" \
    --use-service-account-credentials=false \
    --profiling=false --v=1 >"$LOGS/kube-controller-manager.log" 2>&1 &
  PIDS+=($!)
  "$SCHED" --kubeconfig="$WORK/admin.kubeconfig" --authentication-kubeconfig="$WORK/admin.kubeconfig" \
    --authorization-kubeconfig="$WORK/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
    --secure-port="$(free_port)" --profiling=false --v=1 >"$LOGS/kube-scheduler.log" 2>&1 &
  PIDS+=($!)
fi

# ---- the kubelet. cgroupfs driver (no systemd as PID 1 here); failCgroupV1: false where
# the host is on cgroup v1 (the kubelet refuses v1 by default since 1.35).
log "kubelet ($NODE_NAME) on containerd"
cgroupv1=true; [ -f /sys/fs/cgroup/cgroup.controllers ] && cgroupv1=false
cat >"$WORK/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: $([ "$cgroupv1" = true ] && echo false || echo true)
failSwapOn: false
containerRuntimeEndpoint: unix://$WORK/containerd/containerd.sock
authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: "$P/ca.crt" } }
authorization: { mode: AlwaysAllow }
address: $GW  # the apiserver reaches it at the node IP (exec, logs)
port: $(free_port)
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port)
resolvConf: ""
syncFrequency: 10s
imageGCHighThresholdPercent: 100
evictionHard: { memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%" }
serializeImagePulls: false
podLogsDir: $WORK/pod-logs
EOF
"$KUBELET" --config="$WORK/kubelet.yaml" --kubeconfig="$WORK/admin.kubeconfig" --root-dir="$WORK/kubelet" \
  --hostname-override="$NODE_NAME" --node-ip="$GW" --v=1 >"$LOGS/kubelet.log" 2>&1 &
KUBELET_PID=$!
PIDS+=($KUBELET_PID)
node_ready() { [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
for _ in $(seq 1 120); do node_ready && break; kill -0 "$KUBELET_PID" 2>/dev/null || break; sleep 1; done
node_ready || fail "node $NODE_NAME not Ready: $(grep -E '^E|error' "$LOGS/kubelet.log" | tail -n 5)"
log "PASS node $NODE_NAME Ready ($(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion} on {.status.nodeInfo.containerRuntimeVersion}'), $(secs $(( $(now_ms) - T_START ))) s since start)"
[ "$UNTIL" = node ] && exit 0

# ---- deploy/kubernetes, as docs/operations.md "Install in a Kubernetes cluster" says.
CONFSYNC() { node "$REPO/dist/src/main.js" "$@"; }
OV="$WORK/overlay"; mkdir -p "$OV"
# Step 2: an overlay with this cluster's name and the config with this etcd's endpoint.
sed "s|https://etcd.example.internal:2379|https://$GW:$CETCD_PORT|" deploy/kubernetes/config.yaml >"$OV/config.yaml"
cat >"$OV/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: confsync
resources: [$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$REPO/deploy/kubernetes" "$OV")]  # kustomize takes no absolute path
configMapGenerator:
  - { name: confsync-cluster, behavior: replace, literals: [cluster=node-test] }
  - { name: confsync-config, behavior: replace, files: [config.yaml] }
generatorOptions:
  disableNameSuffixHash: true
EOF
# Step 3: the namespace and the two Secrets.
k apply -f deploy/kubernetes/namespace.yaml >/dev/null
RECIPIENT="$(cd "$WORK" && CONFSYNC keygen --out identity.key 2>>"$LOGS/cli.log" | grep -o 'confsync1[0-9a-z]*' | head -n 1)"
[ -n "$RECIPIENT" ] || fail "confsync keygen printed no recipient: $(tail -n 3 "$LOGS/cli.log")"
k -n confsync create secret generic confsync-identity --from-file=identity.key="$WORK/identity.key" >/dev/null
k -n confsync create secret generic confsync-etcd-tls \
  --from-file=ca.crt="$P/ca.crt" --from-file=tls.crt="$P/confsync-etcd-client.crt" --from-file=tls.key="$P/confsync-etcd-client.key" >/dev/null
shred -u "$WORK/identity.key"

# The consumers, created first (volumes optional: confsync makes the objects later).
# reader-hostpath reads the node's files as the DaemonSet's hostPath consumers do;
# reader-volumes mounts the ConfigMap and Secret confsync writes into the cluster.
k create namespace confsync-test >/dev/null
cat >"$WORK/readers.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: { name: reader-hostpath, namespace: confsync-test }
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
    - name: r
      image: confsync.test/busybox:1
      imagePullPolicy: Never
      command: ["sleep", "100000"]
      volumeMounts:
        - { name: files, mountPath: /files, readOnly: true }
        - { name: secrets, mountPath: /secrets, readOnly: true }
  volumes:
    - { name: files, hostPath: { path: /var/lib/confsync, type: DirectoryOrCreate } }
    - { name: secrets, hostPath: { path: /run/confsync/secrets, type: DirectoryOrCreate } }
---
apiVersion: v1
kind: Pod
metadata: { name: reader-volumes, namespace: default }
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
    - name: r
      image: confsync.test/busybox:1
      imagePullPolicy: Never
      command: ["sleep", "100000"]
      volumeMounts:
        - { name: cm, mountPath: /cm, readOnly: true }
        - { name: sec, mountPath: /sec, readOnly: true }
  volumes:
    - { name: cm, configMap: { name: app, optional: true } }
    - { name: sec, secret: { secretName: db, optional: true } }
EOF
# The ServiceAccount admission wants each namespace's `default` (kube-controller-manager makes it).
for ns in default confsync-test; do
  for _ in $(seq 1 100); do k -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
done
k apply -f "$WORK/readers.yaml" >/dev/null
k wait --for=condition=Ready -n confsync-test pod/reader-hostpath --timeout=120s >/dev/null || fail "reader-hostpath not Ready"
k wait --for=condition=Ready -n default pod/reader-volumes --timeout=120s >/dev/null || fail "reader-volumes not Ready"

# Step 4: apply; the pod's Ready time is the figure.
ds_pod() { k -n confsync get pods -l app.kubernetes.io/name=confsync -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}{end}{.items[0].metadata.name}' 2>/dev/null; }
apply_ms=$(now_ms)
k apply -k "$OV" >"$LOGS/apply.log" 2>&1 || fail "kubectl apply -k: $(tail -n 5 "$LOGS/apply.log")"
k -n confsync rollout status daemonset/confsync --timeout=5m >>"$LOGS/apply.log" 2>&1 \
  || fail "DaemonSet not rolled out: $(k -n confsync get pods -o wide 2>&1 | tail -n 3)"
ready_ms=$(( $(now_ms) - apply_ms ))
POD="$(k -n confsync get pods -l app.kubernetes.io/name=confsync -o jsonpath='{.items[0].metadata.name}')"
log "PASS kubectl apply -k → DaemonSet pod $POD Ready in $(secs "$ready_ms") s"

# Non-root, read-only root filesystem: asked of the running process itself.
uid="$(k -n confsync exec "$POD" -c confsync -- id -u)"
[ "$uid" = 10001 ] || fail "the daemon runs as uid $uid, not 10001"
if err="$(k -n confsync exec "$POD" -c confsync -- touch /app/probe 2>&1)"; then fail "the root filesystem is writable (touch /app/probe succeeded)"; fi
case "$err" in *"Read-only file system"*) ;; *) fail "touch /app/probe failed, but not as read-only: $err" ;; esac
log "PASS the daemon runs as uid 10001, root filesystem read-only (touch: Read-only file system)"

# Put → file in the hostPath reader, → ConfigMap volume of the other reader.
wait_in() { # ns pod path want timeout_s → prints the ms it took
  local ns="$1" pod="$2" path="$3" want="$4" t0 deadline
  t0=$(now_ms); deadline=$(( t0 + $5 * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    [ "$(k -n "$ns" exec "$pod" -- cat "$path" 2>/dev/null)" = "$want" ] && { echo $(( $(now_ms) - t0 )); return 0; }
    sleep 0.1
  done
  return 1
}
hp_ms=(); cm_ms=()
for i in 1 2 3; do
  t0=$(now_ms)
  ectl put /confsync/global/configmaps/default/app/greeting "hello-$i" >/dev/null
  wait_in confsync-test reader-hostpath /files/configmaps/default/app/greeting "hello-$i" 30 >/dev/null \
    || fail "put hello-$i: not in reader-hostpath's /files within 30 s ($(k -n confsync logs "$POD" -c confsync --tail=5 2>&1))"
  hp_ms+=($(( $(now_ms) - t0 )))
  wait_in default reader-volumes /cm/greeting "hello-$i" 120 >/dev/null \
    || fail "put hello-$i: ConfigMap default/app not in reader-volumes' /cm within 120 s ($(k get configmap app -n default -o yaml 2>&1 | tail -n 5))"
  cm_ms+=($(( $(now_ms) - t0 )))
done
log "PASS put → hostPath file inside a pod: ${hp_ms[*]} ms; → ConfigMap volume inside a pod: ${cm_ms[*]} ms (incl. kubectl exec polling)"

SECRET_VALUE="node-test-secret-$RANDOM$RANDOM"
printf '%s' "$SECRET_VALUE" >"$WORK/secret"
CONFSYNC seal --recipient "$RECIPIENT" --path global/secrets/default/db/password <"$WORK/secret" >"$WORK/envelope" 2>>"$LOGS/cli.log" \
  || fail "confsync seal: $(tail -n 3 "$LOGS/cli.log")"
rm -f "$WORK/secret"
t0=$(now_ms)
ectl put /confsync/global/secrets/default/db/password <"$WORK/envelope" >/dev/null
wait_in confsync-test reader-hostpath /secrets/default/db/password "$SECRET_VALUE" 30 >/dev/null \
  || fail "sealed secret: not in reader-hostpath's /secrets within 30 s"
sec_hp=$(( $(now_ms) - t0 ))
mode="$(k -n confsync-test exec reader-hostpath -- stat -L -c '%a %u' /secrets/default/db/password)"
[ "$mode" = "400 10001" ] || fail "the secret's file on the node is '$mode', not '400 10001' (mode, owner)"
wait_in default reader-volumes /sec/password "$SECRET_VALUE" 120 >/dev/null \
  || fail "sealed secret: Secret default/db not in reader-volumes' /sec within 120 s"
log "PASS sealed secret → hostPath file (0400, uid 10001) inside a pod in ${sec_hp} ms, → Secret volume inside a pod in $(( $(now_ms) - t0 )) ms"

# SIGKILL of the daemon's process → the kubelet restarts the container.
restarts() { k -n confsync get pod "$POD" -o jsonpath='{.status.containerStatuses[?(@.name=="confsync")].restartCount}'; }
pod_ready() { [ "$(k -n confsync get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
cid="$(k -n confsync get pod "$POD" -o jsonpath='{.status.containerStatuses[?(@.name=="confsync")].containerID}')"
cid="${cid#containerd://}"
pid="$(CTR tasks ls | awk -v c="$cid" '$1 == c { print $2 }')"
[ -n "$pid" ] || fail "no task for container $cid"
before="$(restarts)"
t0=$(now_ms)
kill -KILL "$pid"
for _ in $(seq 1 600); do
  [ "$(restarts)" != "$before" ] && pod_ready "$POD" && break
  sleep 0.1
done
[ "$(restarts)" != "$before" ] && pod_ready "$POD" || fail "after SIGKILL: restarts $(restarts), not Ready again within 60 s"
log "PASS SIGKILL of the daemon (pid $pid) → restarted by the kubelet, Ready again in $(secs $(( $(now_ms) - t0 ))) s"

# kubectl delete pod → the DaemonSet makes a new one, which converges. The logs of the pod
# that opened the secret first (both its containers' runs), for the check at the end.
k -n confsync logs "$POD" -c confsync --previous >"$LOGS/daemon.log" 2>&1 || true
k -n confsync logs "$POD" -c confsync >>"$LOGS/daemon.log" 2>&1 || true
t0=$(now_ms)
k -n confsync delete pod "$POD" --wait=true >/dev/null
for _ in $(seq 1 600); do
  NEW="$(k -n confsync get pods -l app.kubernetes.io/name=confsync -o jsonpath='{.items[0].metadata.name}' 2>/dev/null)"
  [ -n "$NEW" ] && [ "$NEW" != "$POD" ] && pod_ready "$NEW" && break
  sleep 0.1
done
[ -n "$NEW" ] && [ "$NEW" != "$POD" ] && pod_ready "$NEW" || fail "after kubectl delete pod: no new Ready pod within 60 s"
ectl put /confsync/global/configmaps/default/app/greeting after-delete >/dev/null
wait_in confsync-test reader-hostpath /files/configmaps/default/app/greeting after-delete 30 >/dev/null \
  || fail "the new pod $NEW does not project a put"
log "PASS kubectl delete pod → new pod $NEW Ready in $(secs $(( $(now_ms) - t0 ))) s (from kubectl delete, the old pod's termination included), projects a put"

# No plaintext secret in the daemon's logs.
k -n confsync logs "$NEW" -c confsync >>"$LOGS/daemon.log" 2>&1 || true
grep -q '"msg"' "$LOGS/daemon.log" || fail "no daemon log lines in $LOGS/daemon.log"
grep -qF "$SECRET_VALUE" "$LOGS"/*.log && fail "the secret's value is in a log under $LOGS"
log "PASS the secret's value is in no log (daemon: $(grep -c '"msg"' "$LOGS/daemon.log") lines; kubelet, containerd, apiserver, etcd)"
log "total $(secs $(( $(now_ms) - T_START ))) s"
