#!/usr/bin/env bash
# Builds (once) the pinned control-plane binaries that the local cluster and the e2e tests use:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok (+ its stage
# files) and helm, from Go module sources through the module proxy. No container engine needed.
#
#   hack/build-binaries.sh               build what is missing, print progress on stderr
#   hack/build-binaries.sh --print-env   same, then print `export ...` lines for eval
#   hack/build-binaries.sh --bin-dir     same, then print only the binary directory
#
# Output lives outside the repository, keyed by the pinned versions, so every checkout and CI
# run on this machine reuses it; a run with everything present takes well under a second.
# KUBEBUILDER_ASSETS (the envtest convention) pointing at a directory holding the binaries
# skips the build entirely.
set -euo pipefail

K8S_VERSION=v1.36.2
ETCD_VERSION=v3.6.10
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4

CACHE_ROOT=${COBROWSE_TLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cobrowse-tls}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
BIN_DIR=$CACHE_ROOT/bin/$KEY
SRC_DIR=$CACHE_ROOT/src
LOG_DIR=$CACHE_ROOT/logs
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=("${K8S_CMDS[@]}" etcd kwok helm)

mode=build
case "${1:-}" in
  --print-env) mode=env ;;
  --bin-dir) mode=dir ;;
  "") ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-binaries: unknown option $1" >&2; exit 2 ;;
esac

log() { echo "build-binaries: $*" >&2; }

emit() {
  case $mode in
    env)
      printf 'export COBROWSE_TLS_BIN_DIR=%q\n' "$1"
      printf 'export PATH=%q:"$PATH"\n' "$1"
      ;;
    dir) printf '%s\n' "$1" ;;
  esac
}

have_all() {
  local dir=$1 b
  for b in "${ALL_BINS[@]}"; do [[ -x $dir/$b ]] || return 1; done
  [[ -f $dir/stages/pod-ready.yaml ]]
}

if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  # envtest asset dirs usually hold only etcd, kube-apiserver and kubectl: accept them as the
  # source of those and still build the rest into the cache.
  if have_all "$KUBEBUILDER_ASSETS"; then
    log "using prebuilt binaries from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    emit "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks some binaries; building the missing ones"
fi

mkdir -p "$BIN_DIR" "$SRC_DIR" "$LOG_DIR"
if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  for b in "${ALL_BINS[@]}"; do
    [[ -x $KUBEBUILDER_ASSETS/$b && ! -e $BIN_DIR/$b ]] && ln -s "$KUBEBUILDER_ASSETS/$b" "$BIN_DIR/$b"
  done
fi

if have_all "$BIN_DIR"; then
  emit "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (hack/setup.sh installs it)"; exit 1; }
# Static binaries: no libc coupling, and the toolchain pinned here is the one on the machine.
export CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS="-mod=mod -trimpath"

# A wrapper module per upstream whose own go.mod uses relative replaces (which `go install
# pkg@version` refuses): require the upstream, replace each relative module by its tag.
write_wrapper() { # dir upstream-module upstream-version replace-tag
  local dir=$1 mod=$2 ver=$3 tag=$4 gomod
  mkdir -p "$dir"
  gomod=$(go mod download -json "$mod@$ver" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || { log "cannot download $mod@$ver"; return 1; }
  {
    echo "module cobrowse-tls.local/build-$(basename "$dir")"
    echo
    echo "go $(go env GOVERSION | sed 's/^go\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require $mod $ver"
    echo
    # `replace k8s.io/api => ./staging/src/k8s.io/api` (inside a block or on its own line);
    # etcd also "replaces" modules it forbids with a non-existent path: those stay out.
    grep -v FORBIDDEN_DEPENDENCY "$gomod" | sed -n 's#^\(replace \)\{0,1\}[[:space:]]*\([^[:space:]]*\) => \.\.\{0,1\}/.*#replace \2 => \2 '"$tag"'#p'
  } >"$dir/go.mod.new"
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.in" 2>/dev/null; then
    cp "$dir/go.mod.new" "$dir/go.mod"
    mv "$dir/go.mod.new" "$dir/go.mod.in"
    rm -f "$dir/go.sum"
  else
    rm "$dir/go.mod.new"
  fi
}

build_k8s() {
  local missing=() c dir=$SRC_DIR/k8s-$K8S_VERSION minor
  for c in "${K8S_CMDS[@]}"; do [[ -x $BIN_DIR/$c ]] || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  write_wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "v0${K8S_VERSION#v1}"
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "building ${missing[*]} $K8S_VERSION (log: $LOG_DIR/k8s.log)"
  # One invocation so the shared packages compile once and the links run in parallel.
  (cd "$dir" && go build -ldflags "$ld" -o "$BIN_DIR/" "${missing[@]/#/k8s.io/kubernetes/cmd/}") \
    >"$LOG_DIR/k8s.log" 2>&1 || { tail -n 30 "$LOG_DIR/k8s.log" >&2; return 1; }
}

build_etcd() {
  [[ -x $BIN_DIR/etcd ]] && return 0
  local dir=$SRC_DIR/etcd-$ETCD_VERSION
  write_wrapper "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  log "building etcd $ETCD_VERSION (log: $LOG_DIR/etcd.log)"
  (cd "$dir" && go build -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3) \
    >"$LOG_DIR/etcd.log" 2>&1 || { tail -n 30 "$LOG_DIR/etcd.log" >&2; return 1; }
}

build_kwok() {
  if [[ ! -x $BIN_DIR/kwok ]]; then
    log "building kwok $KWOK_VERSION (log: $LOG_DIR/kwok.log)"
    GOFLAGS=-trimpath GOBIN=$BIN_DIR go install -ldflags "-s -w \
      -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
      >"$LOG_DIR/kwok.log" 2>&1 || { tail -n 30 "$LOG_DIR/kwok.log" >&2; return 1; }
  fi
  if [[ ! -f $BIN_DIR/stages/pod-ready.yaml ]]; then
    local moddir
    moddir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    rm -rf "$BIN_DIR/stages.tmp"
    mkdir -p "$BIN_DIR/stages.tmp"
    # The "fast" profile: nodes Ready at once (and kept so by heartbeats), pods Running and
    # Ready at once, deletions honoured. Only the Stage documents, not kustomize's files.
    local f
    for f in "$moddir"/kustomize/stage/{node/fast,node/heartbeat,pod/fast}/*.yaml; do
      [[ $(basename "$f") == kustomization.yaml ]] || cp "$f" "$BIN_DIR/stages.tmp/"
    done
    chmod -R u+w "$BIN_DIR/stages.tmp"
    rm -rf "$BIN_DIR/stages"
    mv "$BIN_DIR/stages.tmp" "$BIN_DIR/stages"
  fi
}

build_helm() {
  [[ -x $BIN_DIR/helm ]] && return 0
  log "building helm $HELM_VERSION (log: $LOG_DIR/helm.log)"
  GOFLAGS=-trimpath GOBIN=$BIN_DIR go install -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    >"$LOG_DIR/helm.log" 2>&1 || { tail -n 30 "$LOG_DIR/helm.log" >&2; return 1; }
}

# Seconds each step took, for hack/bench_cluster.py (a step that found its output took 0).
timed() {
  local t=$SECONDS
  "build_$1"
  echo "$1 $((SECONDS - t))" >>"$BIN_DIR/.build-times"
}

start=$SECONDS
# Go parallelises each build over the cores itself; running two builds at once on a small
# machine only adds contention, so they go one after another, biggest first.
echo "# build started $(date -u +%FT%TZ)" >>"$BIN_DIR/.build-times"
timed k8s
timed etcd
timed kwok
timed helm
have_all "$BIN_DIR" || { log "some binaries are still missing in $BIN_DIR"; exit 1; }
log "built into $BIN_DIR in $((SECONDS - start))s"
emit "$BIN_DIR"
