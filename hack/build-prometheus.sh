#!/usr/bin/env bash
# Builds (once) the pinned prometheus and promtool that the alert tests use (`make alerts-test`),
# from Go module sources through the module proxy, like hack/build-binaries.sh does for the
# control plane.
#
#   hack/build-prometheus.sh               build what is missing, print progress on stderr
#   hack/build-prometheus.sh --print-env   same, then print `export ...` lines for eval
#   hack/build-prometheus.sh --bin-dir     same, then print only the binary directory
#
# Prometheus 3.x is published on the module proxy as v0.3XX.Y (3.16.0 is v0.316.0). Built
# without the `builtinassets` tag: no web UI, but the HTTP API the tests use is all there.
# `remove_all_sd` leaves out the cloud service discoveries (static, file and HTTP SD stay),
# so the cloud SDKs they import are neither downloaded nor compiled. Measured cold (empty
# module and build caches): 300 s user + 58 s system CPU, 19 min wall on a 2-core machine
# shared with other builds (load 12-16). Output lives outside the repository, keyed by the
# version; a run with everything present takes well under a second.
set -euo pipefail

PROMETHEUS_MODULE_VERSION=v0.316.0 # Prometheus 3.16.0
PROMETHEUS_VERSION=3.16.0

CACHE_ROOT=${COBROWSE_TLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cobrowse-tls}
BIN_DIR=$CACHE_ROOT/bin/prometheus-$PROMETHEUS_MODULE_VERSION
LOG_DIR=$CACHE_ROOT/logs
BINS=(prometheus promtool)

mode=build
case "${1:-}" in
  --print-env) mode=env ;;
  --bin-dir) mode=dir ;;
  "") ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-prometheus: unknown option $1" >&2; exit 2 ;;
esac

log() { echo "build-prometheus: $*" >&2; }

emit() {
  case $mode in
    env)
      printf 'export COBROWSE_TLS_PROMETHEUS_DIR=%q\n' "$BIN_DIR"
      printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
      ;;
    dir) printf '%s\n' "$BIN_DIR" ;;
  esac
}

have_all() {
  local b
  for b in "${BINS[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

if have_all; then
  emit
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (hack/setup.sh installs it)"; exit 1; }
mkdir -p "$BIN_DIR" "$LOG_DIR"
export CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=-trimpath

ld="-s -w"
for kv in Version=$PROMETHEUS_VERSION Revision=$PROMETHEUS_MODULE_VERSION Branch=HEAD \
  BuildUser=cobrowse-tls BuildDate=19700101-00:00:00; do
  ld+=" -X github.com/prometheus/common/version.$kv"
done

start=$SECONDS
missing=()
for b in "${BINS[@]}"; do [[ -x $BIN_DIR/$b ]] || missing+=("github.com/prometheus/prometheus/cmd/$b"); done
log "building prometheus and promtool $PROMETHEUS_VERSION (log: $LOG_DIR/prometheus.log)"
# One invocation (same module, same version): the packages both commands share compile once.
GOBIN=$BIN_DIR go install -tags netgo,remove_all_sd -ldflags "$ld" \
  "${missing[@]/%/@$PROMETHEUS_MODULE_VERSION}" >"$LOG_DIR/prometheus.log" 2>&1 || {
  tail -n 30 "$LOG_DIR/prometheus.log" >&2
  exit 1
}
have_all || { log "some binaries are still missing in $BIN_DIR"; exit 1; }
log "built into $BIN_DIR in $((SECONDS - start))s"
echo "prometheus $((SECONDS - start))" >>"$BIN_DIR/.build-times"
emit
