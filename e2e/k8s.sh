#!/usr/bin/env bash
# A real Kubernetes control plane for the end-to-end tests, built from Go modules:
# etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler, kwok (nodes
# and pods simulated: Deployments roll out to Ready pods with no kubelet) and helm.
#
#   e2e/k8s.sh build     build the binaries (skipped when built from the same go.mod/go.sum)
#   e2e/k8s.sh ensure    build, then start whatever is not running; waits until ready
#   e2e/k8s.sh stop      stop everything this script started (data kept)
#   e2e/k8s.sh reset     stop and wipe etcd's data
#   e2e/k8s.sh env       print the exports the tests use (KUBECONFIG, PATH to helm)
#   e2e/k8s.sh bin       print the directory of the binaries (kubectl, helm, ...)
#
# Everything lives in $VIGIE_E2E_K8S_DIR (default /var/lib/vigie-e2e/k8s): bin/, pki/,
# etcd/, logs/, admin.kubeconfig. The API server listens on https://127.0.0.1:16443
# only. Go's build cache makes a rebuild after a go.mod change incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${VIGIE_E2E_K8S_DIR:-/var/lib/vigie-e2e/k8s}
bin=$dir/bin
pki=$dir/pki
logs=$dir/logs
run=$dir/run
api_port=16443
etcd_port=12379
server=https://127.0.0.1:$api_port


log() { echo "k8s.sh: $*" >&2; }

# build TOOLDIR OUTPUT PACKAGE...: go build unless the stamp (go.mod + go.sum + Go
# version) says the same sources were built already.
build_tool() {
  local tool=$1 out=$2
  shift 2
  local src=$here/k8s/tools/$tool
  local stamp
  stamp=$(cat "$src/go.mod" "$src/go.sum" <(go version) | sha256sum | cut -c1-16)
  local ok=1
  if [ "${out%/}" != "$out" ]; then
    for p in "$@"; do [ -x "$out$(basename "$p")" ] || ok=0; done
  else
    [ -x "$out" ] || ok=0
  fi
  if [ "$ok" = 1 ] && [ "$(cat "$bin/.$tool.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  log "building $tool ($*) — first time takes minutes; Go's build cache makes it quick after"
  local started=$SECONDS
  (cd "$src" && go build -trimpath -o "$out" "$@")
  echo "$stamp" > "$bin/.$tool.stamp"
  log "built $tool in $((SECONDS - started)) s"
}

build() {
  command -v go >/dev/null || { log "Go is needed to build the control plane"; exit 1; }
  # k8s.io/kubernetes 1.34 needs Go 1.24 or later; an older go fetches that toolchain
  # from the module proxy (GOTOOLCHAIN=auto) when it knows how (Go 1.21+).
  mkdir -p "$bin"
  build_tool kube "$bin/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  build_tool etcd "$bin/etcd" go.etcd.io/etcd/server/v3
  build_tool kwok "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok
  build_tool helm "$bin/helm" helm.sh/helm/v3/cmd/helm
  # Once the binaries exist, Go's build cache (~4 GiB for k8s.io/kubernetes) only speeds
  # up a rebuild after a go.mod change: dropped when the disk is short (a CI run once ran
  # out of space), kept otherwise.
  local free
  free=$(df -P --block-size=1G "$dir" | awk 'NR == 2 { print $4 }')
  if [ "${free:-0}" -lt 12 ] && [ -d "$(go env GOCACHE)" ]; then
    log "$free GiB free: dropping Go's build cache ($(go env GOCACHE))"
    go clean -cache
  fi
}

# cert NAME CN ORG [SANS]: a key and certificate signed by the e2e CA.
cert() {
  local name=$1 cn=$2 org=$3 sans=${4:-}
  [ -f "$pki/$name.crt" ] && return 0
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  if [ -n "$sans" ]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" > "$pki/$name.ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' > "$pki/$name.ext"
  fi
  openssl x509 -req -days 3650 -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

kubeconfig() {
  local name=$1
  local file=$dir/$name.kubeconfig
  [ -f "$file" ] && return 0
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: e2e
  context: {cluster: e2e, user: $name}
current-context: e2e
EOF
}

pki() {
  mkdir -p "$pki"
  if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vigie e2e cluster CA" \
      -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  fi
  [ -f "$pki/sa.key" ] || {
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  }
  # The Service range moved to 10.96.0.0/16 (a /24 runs out of IPs with 500 Releases).
  if [ -f "$pki/apiserver.crt" ] && ! openssl x509 -in "$pki/apiserver.crt" -noout -text | grep -q 10.96.0.1; then
    rm -f "$pki/apiserver.crt" "$pki/apiserver.key"
  fi
  cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  # kwok plays every kubelet: it updates node and pod status cluster-wide.
  cert kwok kwok system:masters
  for n in admin controller-manager scheduler kwok; do kubeconfig "$n"; done
}

running() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

# spawn NAME CMD...: start in the background (own session), log to logs/NAME.log.
spawn() {
  local name=$1
  shift
  running "$name" && return 0
  mkdir -p "$logs" "$run"
  # The daemon outlives this script: it must not inherit its caller's descriptors (a
  # lock held with flock around the tests would be held for as long as it runs).
  (
    for fd in /proc/$BASHPID/fd/*; do
      n=${fd##*/}
      if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" >> "$logs/$name.log" 2>&1 < /dev/null
  ) &
  echo $! > "$run/$name.pid"
}

wait_for() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "$what not ready; its log: $logs/$what.log"
  tail -20 "$logs/$what.log" >&2 || true
  return 1
}

kc() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }

start() {
  pki
  spawn etcd "$bin/etcd" --data-dir "$dir/etcd" --name e2e \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster e2e=http://127.0.0.1:12380 --log-level warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"
  spawn kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --authorization-mode Node,RBAC \
    --client-ca-file "$pki/ca.crt" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --disable-admission-plugins ServiceAccount \
    --enable-priority-and-fairness=false \
    --v 1
  wait_for kube-apiserver 240 kc get --raw /readyz
  spawn kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route' \
    --bind-address 127.0.0.1 --secure-port 10257 --v 1
  spawn kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 --v 1 \
    --kube-api-qps 200 --kube-api-burst 400
  # kwok's pod stages (e2e/k8s/kwok-stages.yaml): a kwok started with other stages
  # is restarted.
  local stages=$here/k8s/kwok-stages.yaml stamp
  stamp=$(sha256sum < "$stages" | cut -c1-16)
  if running kwok && [ "$(cat "$run/kwok.stages" 2>/dev/null)" != "$stamp" ]; then
    log "kwok's stages changed: restarting kwok"
    kill "$(cat "$run/kwok.pid")" 2>/dev/null || true
    while running kwok; do sleep 0.2; done
  fi
  mkdir -p "$run"
  echo "$stamp" > "$run/kwok.stages"
  spawn kwok "$bin/kwok" --kubeconfig "$dir/kwok.kubeconfig" --config "$stages" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --server-address 127.0.0.1:10247 --v info
  for i in 1 2; do
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "6000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "6000"}
EOF
  done
  # kwok's heartbeats are slow for the node lifecycle controller, which would mark the
  # nodes NotReady now and then (and every pod on them with it): it is off, and the
  # not-ready taint that admission puts on new nodes is lifted here once kwok reports
  # them Ready.
  wait_for kwok 120 node_ready
  kc taint nodes --all node.kubernetes.io/not-ready- >/dev/null 2>&1 || true
  wait_for kwok 60 node_schedulable
  wait_for kube-controller-manager 120 default_sa
  log "control plane ready: export KUBECONFIG=$dir/admin.kubeconfig"
}

node_ready() {
  for n in kwok-node-1 kwok-node-2; do
    kc get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True || return 1
  done
}
node_schedulable() {
  for n in kwok-node-1 kwok-node-2; do
    [ -z "$(kc get node "$n" -o jsonpath='{.spec.taints}')" ] || return 1
  done
}
default_sa() { kc -n default get serviceaccount default; }

stop() {
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if running "$name"; then
      kill "$(cat "$run/$name.pid")" 2>/dev/null || true
      for _ in $(seq 1 40); do running "$name" || break; sleep 0.25; done
      running "$name" && kill -9 "$(cat "$run/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$run/$name.pid"
  done
}

case "${1:-ensure}" in
  build) build ;;
  ensure) build; start ;;
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$dir/etcd" ;;
  env) echo "export KUBECONFIG=$dir/admin.kubeconfig PATH=$bin:\$PATH" ;;
  bin) echo "$bin" ;;
  *) echo "usage: $0 build|ensure|start|stop|reset|env" >&2; exit 2 ;;
esac
