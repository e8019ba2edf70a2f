#!/usr/bin/env bash
# Idempotent set-up of everything the demo and the tests need on a fresh machine:
# system tools (Java keytool, OpenSSL, gcc, Go, the container engine, debootstrap), a
# virtualenv with the package and its dev extra, the pinned control-plane binaries, promtool
# and prometheus (built once, cached outside the repository). It never starts dockerd:
# hack/engine.sh does, when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v keytool >/dev/null || need_apt+=(default-jdk-headless)
command -v javac >/dev/null || need_apt+=(default-jdk-headless)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v go >/dev/null || need_apt+=(golang-go)
# The tests build a fake crypt32 from C (tests/native/fake_crypt32.c).
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
# The container engine and base-image tools of `make image` / the kind stage (hack/engine.sh,
# hack/images.sh): Debian's docker.io (dockerd, containerd, runc and a BuildKit-capable CLI).
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

if [[ ${SKIP_BINARIES:-0} != 1 ]]; then
  hack/build-binaries.sh >&2
  hack/build-prometheus.sh >&2 # promtool and prometheus, for the alert tests
fi
