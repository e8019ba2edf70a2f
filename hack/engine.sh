#!/usr/bin/env bash
# The container engine for `make image` and the kind stage: Debian's docker.io (installed by
# hack/setup.sh), started here when it is not running and stopped again by whoever started it.
#
#   hack/engine.sh run CMD ARGS...  start dockerd if needed, run CMD, stop dockerd if started
#                                   here (also when CMD fails or is interrupted)
#   hack/engine.sh start            start dockerd if needed (prints "started" or "running")
#   hack/engine.sh stop             stop a dockerd that `start` started (no-op otherwise)
#   hack/engine.sh --print-env      `export` lines: PATH with the engine's own docker CLI first
#   hack/engine.sh --capwrap        build (once) and print the runc-capwrap binary
#
# dockerd runs with runc-capwrap (hack/runc-capwrap) as its default OCI runtime: where a
# capability is missing from the machine's bounding set (CAP_SYS_RESOURCE on some VMs),
# privileged containers such as kind's nodes otherwise fail in runc. Elsewhere it changes
# nothing. Its binary is built once into the cache.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${COBROWSE_TLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cobrowse-tls}
ENGINE_DIR=$CACHE_ROOT/engine
PIDFILE=${COBROWSE_TLS_DOCKERD_PIDFILE:-/run/cobrowse-tls-dockerd.pid}
LOG=$CACHE_ROOT/logs/dockerd.log

log() { echo "engine: $*" >&2; }

# The CLI that came with the daemon: a newer CLI elsewhere on PATH may lack the BuildKit
# client that Debian's 20.10 CLI has built in.
cli_dir() {
  mkdir -p "$ENGINE_DIR/cli"
  local c
  for c in /usr/bin/docker $(command -v docker 2>/dev/null); do
    [[ -x $c ]] && { ln -sfn "$c" "$ENGINE_DIR/cli/docker"; break; }
  done
  echo "$ENGINE_DIR/cli"
}

capwrap() {
  local src=$HACK/runc-capwrap key out
  key=$(cat "$src/go.mod" "$src/main.go" | sha256sum | cut -c1-16)
  out=$ENGINE_DIR/runc-capwrap-$key
  if [[ ! -x $out ]]; then
    log "building runc-capwrap"
    (cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} go build -trimpath \
      -ldflags "-s -w" -o "$out.tmp" .) && mv "$out.tmp" "$out"
  fi
  echo "$out"
}

running() { "$(cli_dir)/docker" info >/dev/null 2>&1; }

start() {
  if running; then
    echo running
    return 0
  fi
  command -v dockerd >/dev/null || { log "dockerd is not installed (hack/setup.sh installs docker.io)"; exit 1; }
  local wrap
  mkdir -p "$(dirname "$LOG")"
  wrap=$(capwrap)
  log "starting dockerd (log: $LOG)"
  # setsid: the daemon outlives this script's process group until `stop`.
  local extra=()
  # Another image store (for example to measure a cold run without losing the warm one).
  [[ -n ${COBROWSE_TLS_DOCKER_DATA_ROOT:-} ]] && extra=(--data-root "$COBROWSE_TLS_DOCKER_DATA_ROOT")
  setsid dockerd --add-runtime "capwrap=$wrap" --default-runtime capwrap \
    --pidfile "$PIDFILE" "${extra[@]}" >>"$LOG" 2>&1 </dev/null &
  local i
  for i in $(seq 1 120); do
    running && { echo started; return 0; }
    kill -0 $! 2>/dev/null || { tail -n 20 "$LOG" >&2; log "dockerd exited"; exit 1; }
    sleep 0.5
  done
  tail -n 20 "$LOG" >&2
  log "dockerd did not answer within 60 s"
  exit 1
}

stop() {
  [[ -f $PIDFILE ]] || return 0
  local pid i
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd ($pid)"
    kill -TERM "$pid"
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && { log "dockerd ignored SIGTERM: SIGKILL"; kill -KILL "$pid"; }
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  --capwrap) capwrap ;;
  --print-env)
    printf 'export PATH=%q:"$PATH"\n' "$(cli_dir)"
    ;;
  run)
    shift
    state=$(start)
    [[ $state == started ]] && trap stop EXIT
    trap 'exit 130' INT TERM
    PATH=$(cli_dir):$PATH "$@"
    ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
