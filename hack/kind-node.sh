#!/usr/bin/env bash
# Builds (once) kind and the kind node image at the pinned Kubernetes version, with no image
# registry: every binary from the Go module proxy, every package from Debian.
#
#   DEBIAN_IMAGE=<local Debian image> hack/kind-node.sh   (hack/images.sh node sets it)
#
# Prints the node image name. The binaries are cached in $CACHE/kind/<versions>/ (kind,
# kubeadm, kubelet, kube-proxy, CoreDNS, pause), the images in the engine, tagged and labelled
# by a hash of their inputs, so an unchanged second run only checks labels.
#
# The node image is assembled the way `kind build node-image` assembles one, without its
# registry pulls: kind's images/base files on Debian (images/kind-node/Dockerfile), the
# Kubernetes binaries in /usr/bin, /kind/version, and the control-plane images (FROM scratch
# plus the binaries; kube-proxy on Debian for iptables), CoreDNS and pause imported into the
# node's containerd, named as kubeadm expects them (etcd by the imageTag in kind-config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=v1.36.2
KIND_VERSION=v0.33.0
COREDNS_VERSION=v1.14.2
# kind's containerd config names this sandbox image; kubeadm's own list names 3.10.2.
PAUSE_TAGS=(3.10 3.10.2)
NODE_IMAGE=${KIND_NODE_IMAGE:-cobrowse-tls/kind-node:$K8S_VERSION}

CACHE_ROOT=${COBROWSE_TLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cobrowse-tls}
BITS=$CACHE_ROOT/kind/k8s-${K8S_VERSION}_kind-${KIND_VERSION}_coredns-$COREDNS_VERSION
LOG_DIR=$CACHE_ROOT/logs
DOCKER=${DOCKER:-docker}
mkdir -p "$BITS" "$LOG_DIR"
log() { echo "kind-node: $*" >&2; }
export CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# The control-plane binaries and etcd, and the wrapper module of k8s.io/kubernetes that
# hack/build-binaries.sh maintains (its go.mod replaces the staging modules by their tags).
CP_BIN=$(hack/build-binaries.sh --bin-dir)
K8S_SRC=$CACHE_ROOT/src/k8s-$K8S_VERSION
ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' hack/build-binaries.sh)
ETCD_TAG=${ETCD_VERSION#v}-0

timed() { # name command...
  local t=$SECONDS name=$1
  shift
  "$@"
  log "$name: $((SECONDS - t)) s"
}

build_bits() {
  local missing=() c
  for c in kubeadm kubelet kube-proxy; do [[ -x $BITS/$c ]] || missing+=("$c"); done
  if ((${#missing[@]})); then
    local ld="-s -w" p minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    log "building ${missing[*]} $K8S_VERSION (log: $LOG_DIR/kind-k8s.log)"
    (cd "$K8S_SRC" && GOFLAGS="-mod=mod -trimpath" go build -ldflags "$ld" -o "$BITS/" \
      "${missing[@]/#/k8s.io/kubernetes/cmd/}") >"$LOG_DIR/kind-k8s.log" 2>&1 ||
      { tail -n 30 "$LOG_DIR/kind-k8s.log" >&2; return 1; }
  fi
  if [[ ! -x $BITS/kind ]]; then
    log "building kind $KIND_VERSION (log: $LOG_DIR/kind.log)"
    GOFLAGS=-trimpath GOBIN=$BITS go install -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION" \
      >"$LOG_DIR/kind.log" 2>&1 || { tail -n 30 "$LOG_DIR/kind.log" >&2; return 1; }
  fi
  if [[ ! -x $BITS/coredns ]]; then
    log "building CoreDNS $COREDNS_VERSION (log: $LOG_DIR/coredns.log)"
    GOFLAGS=-trimpath GOBIN=$BITS go install -ldflags "-s -w" \
      "github.com/coredns/coredns@$COREDNS_VERSION" >"$LOG_DIR/coredns.log" 2>&1 ||
      { tail -n 30 "$LOG_DIR/coredns.log" >&2; return 1; }
  fi
  if [[ ! -x $BITS/pause ]]; then
    (cd images/kind-node/pause && GOFLAGS=-trimpath go build -ldflags "-s -w" -o "$BITS/pause" .)
  fi
}

have_label() { # image key
  [[ $("$DOCKER" image inspect -f '{{index .Config.Labels "io.cobrowse-tls.inputs"}}' "$1" \
    2>/dev/null) == "$2" ]]
}

# An image of one static binary (no shell, no libc), as the distroless upstream images are.
scratch_image() { # name binary path-in-image entrypoint-json
  local name=$1 bin=$2 dest=$3 entry=$4 k root
  k=$(sha256sum "$bin" | cut -c1-16)
  have_label "$name" "$k" && return 0
  root=$(mktemp -d)
  mkdir -p "$root/$(dirname "$dest")" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp "$bin" "$root/$dest"
  echo 'root:x:0:0:root:/root:/sbin/nologin' >"$root/etc/passwd"
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$root/etc/passwd"
  tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
    --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" --change "ENTRYPOINT $entry" \
    --change "LABEL io.cobrowse-tls.inputs=$k" - "$name" >/dev/null
  rm -rf "$root"
}

component_images() {
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    scratch_image "registry.k8s.io/$c:$K8S_VERSION" "$CP_BIN/$c" "/usr/local/bin/$c" "[\"/usr/local/bin/$c\"]"
  done
  scratch_image "registry.k8s.io/etcd:$ETCD_TAG" "$CP_BIN/etcd" /usr/local/bin/etcd '["/usr/local/bin/etcd"]'
  scratch_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$BITS/coredns" /coredns '["/coredns"]'
  local t
  for t in "${PAUSE_TAGS[@]}"; do
    scratch_image "registry.k8s.io/pause:$t" "$BITS/pause" /pause '["/pause"]'
  done
  local k ctx
  k=$(cat "$BITS/kube-proxy" images/kind-node/kube-proxy.Dockerfile <(echo "$DEBIAN_IMAGE") | sha256sum | cut -c1-16)
  if ! have_label "registry.k8s.io/kube-proxy:$K8S_VERSION" "$k"; then
    ctx=$(mktemp -d)
    cp "$BITS/kube-proxy" "$ctx/"
    log "building the kube-proxy image (log: $LOG_DIR/image-kube-proxy.log)"
    DOCKER_BUILDKIT=1 "$DOCKER" build --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" --label "io.cobrowse-tls.inputs=$k" \
      -t "registry.k8s.io/kube-proxy:$K8S_VERSION" -f images/kind-node/kube-proxy.Dockerfile "$ctx" \
      >"$LOG_DIR/image-kube-proxy.log" 2>&1 || { tail -n 30 "$LOG_DIR/image-kube-proxy.log" >&2; rm -rf "$ctx"; return 1; }
    rm -rf "$ctx"
  fi
}

node_base() { # prints the image name
  local kind_dir capwrap ctx k name
  kind_dir=$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  capwrap=$(hack/engine.sh --capwrap)
  ctx=$(mktemp -d)
  cp -r images/kind-node/. "$ctx/"
  rm -rf "$ctx/pause"
  mkdir -p "$ctx/kind"
  cp -r "$kind_dir/images/base/files" "$ctx/kind/"
  chmod -R u+w "$ctx/kind"
  cp "$capwrap" "$ctx/runc-capwrap"
  k=$( (echo "$DEBIAN_IMAGE"; cd "$ctx" && find . -type f | sort | xargs sha256sum) | sha256sum | cut -c1-12)
  name=cobrowse-tls/kind-node-base:$k
  if ! "$DOCKER" image inspect "$name" >/dev/null 2>&1; then
    log "building $name (log: $LOG_DIR/image-kind-node-base.log)"
    DOCKER_BUILDKIT=1 "$DOCKER" build --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" -t "$name" "$ctx" \
      >"$LOG_DIR/image-kind-node-base.log" 2>&1 ||
      { tail -n 30 "$LOG_DIR/image-kind-node-base.log" >&2; rm -rf "$ctx"; return 1; }
    # The bases of earlier inputs.
    "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}' cobrowse-tls/kind-node-base |
      grep -vx "$name" | xargs -r "$DOCKER" rmi >/dev/null 2>&1 || true
  fi
  rm -rf "$ctx"
  echo "$name"
}

IMAGES=()
image_list() {
  IMAGES=("registry.k8s.io/kube-apiserver:$K8S_VERSION" "registry.k8s.io/kube-controller-manager:$K8S_VERSION"
    "registry.k8s.io/kube-scheduler:$K8S_VERSION" "registry.k8s.io/kube-proxy:$K8S_VERSION"
    "registry.k8s.io/etcd:$ETCD_TAG" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION")
  local t
  for t in "${PAUSE_TAGS[@]}"; do IMAGES+=("registry.k8s.io/pause:$t"); done
}

node_image() {
  local base=$1 k cid ids
  image_list
  ids=$("$DOCKER" image inspect -f '{{.Id}}' "${IMAGES[@]}")
  k=$(printf '%s\n' "$base" "$ids" "$(sha256sum "$BITS"/kube{adm,let} "$CP_BIN/kubectl")" | sha256sum | cut -c1-16)
  have_label "$NODE_IMAGE" "$k" && return 0
  log "assembling $NODE_IMAGE (log: $LOG_DIR/image-kind-node.log)"
  cid=$("$DOCKER" run -d --privileged --entrypoint sleep "$base" infinity)
  BUILD_CID=$cid
  {
    local b
    for b in "$BITS/kubeadm" "$BITS/kubelet" "$CP_BIN/kubectl"; do
      "$DOCKER" cp "$b" "$cid:/usr/bin/$(basename "$b")"
    done
    "$DOCKER" exec "$cid" sh -c "chown root:root /usr/bin/kube* && chmod 0755 /usr/bin/kube* \
      && echo $K8S_VERSION > /kind/version"
    # The images into the node's containerd (a containerd started just for this).
    "$DOCKER" save "${IMAGES[@]}" | "$DOCKER" exec -i "$cid" sh -euc '
      containerd >/tmp/containerd.log 2>&1 & pid=$!
      i=0
      until [ -S /run/containerd/containerd.sock ]; do
        kill -0 $pid 2>/dev/null && [ $i -lt 300 ] || { cat /tmp/containerd.log; exit 1; }
        i=$((i+1)); sleep 0.1
      done
      ctr -n k8s.io images import --all-platforms --no-unpack -
      ctr -n k8s.io images ls -q
      kill $pid; wait $pid || true
      rm -f /tmp/containerd.log'
  } >"$LOG_DIR/image-kind-node.log" 2>&1 || { tail -n 30 "$LOG_DIR/image-kind-node.log" >&2; return 1; }
  "$DOCKER" commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' --change "LABEL io.cobrowse-tls.inputs=$k" "$cid" "$NODE_IMAGE" >/dev/null
}

# The build container goes whatever happens (error, interrupt).
BUILD_CID=
cleanup() {
  [[ -z $BUILD_CID ]] || "$DOCKER" rm -f "$BUILD_CID" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "${1:-}" in
  --kind) build_bits >&2; echo "$BITS/kind"; exit 0 ;;
  "") ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
: "${DEBIAN_IMAGE:?DEBIAN_IMAGE: the local Debian image (hack/images.sh debian)}"
timed "binaries" build_bits
timed "component images" component_images
base=$(node_base)
timed "node image" node_image "$base"
echo "$NODE_IMAGE"
