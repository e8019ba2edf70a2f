#!/usr/bin/env bash
# The kind cluster of kind-config.yaml, from the locally built node image.
#
#   hack/kind.sh up KUBECONFIG    build what is missing (hack/images.sh node), create the
#                                 cluster, route pod ranges between nodes, wait for CoreDNS
#   hack/kind.sh down             delete the cluster (no-op when there is none)
#   hack/kind.sh load IMAGE...    load local images into the worker nodes
#   hack/kind.sh kind ARGS...     run the pinned kind
#
# Needs a running engine (hack/engine.sh run ...). KUBECONFIG is always explicit: kind would
# otherwise write ~/.kube/config.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$(sed -n 's/^name: //p' kind-config.yaml)
eval "$(hack/engine.sh --print-env)"
KIND=$(hack/kind-node.sh --kind)
KUBECTL=$(hack/build-binaries.sh --bin-dir)/kubectl
log() { echo "kind: $*" >&2; }

exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$NAME"; }

# What kindnetd would do: a route on each node to every other node's pod range.
routes() {
  local kc=$1 lines node cidr ip other i
  # Each node gets its range when it registers; wait until all have one.
  for i in $(seq 1 120); do
    "$KUBECTL" --kubeconfig "$kc" get nodes -o jsonpath='{range .items[*]}{.spec.podCIDR}{"\n"}{end}' |
      grep -qx '' || break
    sleep 0.5
  done
  lines=$("$KUBECTL" --kubeconfig "$kc" get nodes \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
  while read -r node _ _; do
    while read -r other cidr ip; do
      [[ $other == "$node" || -z $cidr ]] && continue
      docker exec "$node" ip route replace "$cidr" via "$ip"
    done <<<"$lines"
  done <<<"$lines"
}

up() {
  local kc=${1:?kubeconfig path} t=$SECONDS
  local image
  image=$(hack/images.sh node)
  log "node image ready: $image ($((SECONDS - t)) s)"
  t=$SECONDS
  exists && "$KIND" delete cluster --name "$NAME" >&2
  mkdir -p "$(dirname "$kc")"
  "$KIND" create cluster --config kind-config.yaml --kubeconfig "$kc" --wait 180s >&2
  routes "$kc"
  "$KUBECTL" --kubeconfig "$kc" -n kube-system rollout status deployment/coredns --timeout 180s >&2
  log "cluster $NAME up in $((SECONDS - t)) s (kubeconfig: $kc)"
  # For hack/kind-e2e.sh's summary.
  [[ -z ${KIND_TIMINGS:-} ]] || printf '%-34s %4d s\n' "kind create cluster (+ CoreDNS)" $((SECONDS - t)) >>"$KIND_TIMINGS"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) if exists; then "$KIND" delete cluster --name "$NAME" >&2; fi ;;
  load)
    shift
    # Only where pods run: the control plane keeps kubeadm's NoSchedule taint.
    workers=$("$KIND" get nodes --name "$NAME" | grep -v -- '-control-plane$' | paste -sd, -)
    t=$SECONDS
    "$KIND" load docker-image --name "$NAME" --nodes "$workers" "$@" >&2
    [[ -z ${KIND_TIMINGS:-} ]] || printf '%-34s %4d s\n' "kind load (images into workers)" $((SECONDS - t)) >>"$KIND_TIMINGS"
    ;;
  kind) shift; exec "$KIND" "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
