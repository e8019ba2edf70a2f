#!/usr/bin/env bash
# Container images built locally, for machines where no image registry is reachable, each
# tagged by a hash of its inputs and built only when that tag is missing:
#
#   hack/images.sh debian        Debian bookworm (debootstrap --variant=minbase); the root
#                                file system tarball is kept in the cache, so a machine whose
#                                engine lost its images re-imports it in seconds
#   hack/images.sh python        images/python-base on it: a stand-in for the official Python
#                                image (Debian's Python 3.11 as a venv at /usr/local)
#   hack/images.sh operator      the operator image (Dockerfile) on PYTHON_IMAGE when it can
#                                be pulled, else on that local base; checked to run as
#                                65532 read-only without capabilities; its size printed
#   hack/images.sh standin       images/cobrowse-standin: Debian's OpenJDK and OpenSSL
#   hack/images.sh node          the kind node image (hack/kind-node.sh)
#
# Each prints the image name on stdout. Needs a running engine (hack/engine.sh run ...).
# The host's CA bundle reaches build stages that download (pip) as a BuildKit secret, never
# an image layer.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_ROOT=${COBROWSE_TLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cobrowse-tls}
IMG_CACHE=$CACHE_ROOT/images
LOG_DIR=$CACHE_ROOT/logs
DOCKER=${DOCKER:-docker}
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OPERATOR_IMAGE=${OPERATOR_IMAGE:-cobrowse-tls-operator:$VERSION}
mkdir -p "$IMG_CACHE" "$LOG_DIR"
# The engine's own CLI first (see hack/engine.sh).
eval "$(hack/engine.sh --print-env)"

log() { echo "images: $*" >&2; }
have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
key() { cat "$@" | sha256sum | cut -c1-12; }

# docker build with BuildKit (the Dockerfiles use RUN --mount), output in a log file.
build() { # log-name docker-build-args...
  local name=$1
  shift
  local secret=()
  [[ -f $HOST_CA ]] && secret=(--secret "id=host-ca,src=$HOST_CA")
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain "${secret[@]}" "$@" \
    >"$LOG_DIR/image-$name.log" 2>&1 || {
    tail -n 40 "$LOG_DIR/image-$name.log" >&2
    log "building $name failed (log: $LOG_DIR/image-$name.log)"
    return 1
  }
}

# debootstrap mounts /proc (and more) inside the tree; a failed run can leave them mounted.
unmount_under() {
  local m
  for m in $(awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" || true
  done
}

# Images of earlier inputs: untagged ones of ours, and other tags of a repository that holds
# one image per input hash.
prune() { # [repository keep-tag]
  if [[ -n ${1:-} ]]; then
    "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}' "$1" | grep -vx "$1:$2" |
      xargs -r "$DOCKER" rmi >/dev/null 2>&1 || true
  fi
  "$DOCKER" image prune -f --filter label=io.cobrowse-tls.inputs >/dev/null 2>&1 || true
}

debian() {
  # The inputs: this function's text, the suite and the mirror.
  local k name tarball
  k=$(printf '%s\n' "$(declare -f debian)" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" | sha256sum | cut -c1-12)
  name=cobrowse-tls/debian:$DEBIAN_SUITE-$k
  tarball=$IMG_CACHE/debian-$DEBIAN_SUITE-$k.tar.gz
  if ! have "$name"; then
    if [[ ! -f $tarball ]]; then
      command -v debootstrap >/dev/null || { log "debootstrap missing (hack/setup.sh installs it)"; return 1; }
      local root
      root=$(mktemp -d "$IMG_CACHE/rootfs.XXXXXX")
      log "debootstrap --variant=minbase $DEBIAN_SUITE (log: $LOG_DIR/debootstrap.log)"
      if ! debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" \
        >"$LOG_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$LOG_DIR/debootstrap.log" >&2
        unmount_under "$root"
        rm -rf --one-file-system "$root"
        return 1
      fi
      # As Docker's official slim Debian images: no apt caches, no recommends, no
      # documentation or translations (now or from packages installed later).
      rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
      printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$root/etc/apt/apt.conf.d/99no-recommends"
      printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
        >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
      find "$root"/usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete
      find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
      rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
      unmount_under "$root"
      tar -C "$root" --numeric-owner -czf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf --one-file-system "$root"
    fi
    log "importing $name"
    "$DOCKER" import --change 'CMD ["bash"]' "$tarball" "$name" >/dev/null
  fi
  echo "$name"
}

python() {
  local base k name
  base=$(debian)
  k=$(printf '%s\n' "$base" "$(cat images/python-base/Dockerfile)" | sha256sum | cut -c1-12)
  name=cobrowse-tls/python:3.11-$DEBIAN_SUITE-$k
  if ! have "$name"; then
    log "building $name"
    build python-base --build-arg "BASE_IMAGE=$base" -t "$name" images/python-base
    prune "${name%:*}" "${name##*:}"
  fi
  echo "$name"
}

operator() {
  local base k
  # PYTHON_IMAGE (the official image by default in `make image`) when the engine has it or
  # can pull it; else, with no registry reachable, the local Debian-made base.
  if [[ -n ${PYTHON_IMAGE:-} ]] && { have "$PYTHON_IMAGE" || "$DOCKER" pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; }; then
    base=$PYTHON_IMAGE
  else
    [[ -n ${PYTHON_IMAGE:-} ]] && log "cannot pull $PYTHON_IMAGE (no registry?): using the local Python base"
    base=$(python)
  fi
  # The build context: what the Dockerfile copies (pyproject.toml, README.md, operator/).
  k=$(printf '%s\n' "$base" "$VERSION" \
    "$(cat Dockerfile pyproject.toml README.md)" \
    "$(git ls-files -s operator 2>/dev/null; git diff HEAD -- operator 2>/dev/null)" \
    | sha256sum | cut -c1-12)
  if [[ $("$DOCKER" image inspect -f '{{index .Config.Labels "io.cobrowse-tls.inputs"}}' \
    "$OPERATOR_IMAGE" 2>/dev/null) != "$k" ]]; then
    log "building $OPERATOR_IMAGE on $base (log: $LOG_DIR/image-operator.log)"
    build operator --build-arg "PYTHON_IMAGE=$base" --build-arg "VERSION=$VERSION" \
      --label "io.cobrowse-tls.inputs=$k" -t "$OPERATOR_IMAGE" -f Dockerfile .
    prune
  fi
  # What the chart relies on: user 65532, a read-only root file system, no capabilities.
  [[ $("$DOCKER" image inspect -f '{{.Config.User}}' "$OPERATOR_IMAGE") == 65532:65532 ]] ||
    { log "$OPERATOR_IMAGE does not run as 65532:65532"; return 1; }
  "$DOCKER" run --rm --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    -v "$PWD/examples:/examples:ro" "$OPERATOR_IMAGE" render -f /examples/pem.yaml >/dev/null ||
    { log "$OPERATOR_IMAGE: cobrowse-tls render failed read-only, unprivileged"; return 1; }
  log "$OPERATOR_IMAGE: $("$DOCKER" image inspect -f '{{.Size}}' "$OPERATOR_IMAGE" |
    awk '{printf "%.0f MB", $1 / 1e6}') on $base ($("$DOCKER" image inspect -f '{{.Size}}' "$base" |
    awk '{printf "%.0f MB", $1 / 1e6}')); runs as 65532, read-only, without capabilities"
  echo "$OPERATOR_IMAGE"
}

standin() {
  local base k name
  base=$(debian)
  k=$(printf '%s\n' "$base" "$(cat images/cobrowse-standin/*)" | sha256sum | cut -c1-12)
  name=cobrowse-tls/cobrowse-standin:$k
  if ! have "$name"; then
    local ctx
    ctx=$(mktemp -d)
    cp images/cobrowse-standin/Dockerfile "$ctx/"
    command -v javac >/dev/null || { log "javac missing (hack/setup.sh installs it)"; return 1; }
    javac --release 17 -d "$ctx" images/cobrowse-standin/TlsProbe.java
    log "building $name"
    build standin --build-arg "BASE_IMAGE=$base" -t "$name" "$ctx" || { rm -rf "$ctx"; return 1; }
    prune "${name%:*}" "${name##*:}"
    rm -rf "$ctx"
  fi
  echo "$name"
}

node() {
  DEBIAN_IMAGE=$(debian) hack/kind-node.sh
}

case "${1:-}" in
  debian | python | operator | standin | node) "$1" ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
