#!/usr/bin/env bash
# The kind stage (`make kind-e2e`, and the last stage of hack/test.sh): real containers.
#
#   hack/kind-e2e.sh [PYTEST ARGS...]     (default: tests/e2e, the whole e2e suite)
#
# 1. starts dockerd if it is not running (hack/engine.sh), and stops it at the end;
# 2. builds what is missing, each cached by its inputs: the operator image (`make image`),
#    the Co-browse stand-in image, kind and its node image at the pinned Kubernetes version;
# 3. runs the e2e suite with E2E_CLUSTER=kind: kind-config.yaml's cluster (1 control plane,
#    2 workers) with the images loaded, the whole suite (Windows-only tests skip), plus
#    tests/e2e/test_kind_pods.py: the chart with the real image in a restricted namespace in
#    both RBAC modes, upgrade and uninstall, and the Co-browse stand-in's CA rotation;
# 4. deletes the cluster (also on failure or interruption; E2E_KEEP=1 keeps it and dockerd).
#
# Prints how long each step took and the figures the tests measured (out/kind/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} != --inside-engine ]]; then
  if [[ ${E2E_KEEP:-0} == 1 ]]; then
    hack/engine.sh start >/dev/null
    exec "$0" --inside-engine "$@"
  fi
  exec hack/engine.sh run "$0" --inside-engine "$@"
fi
shift
export PATH="$PWD/.venv/bin:$PATH"
eval "$(hack/build-binaries.sh --print-env)"
eval "$(hack/engine.sh --print-env)"
OUT=$PWD/out/kind
mkdir -p "$OUT"
: >"$OUT/figures.txt"
: >"$OUT/timings.txt"
start=$SECONDS
step() { # name seconds
  printf '%-34s %4d s\n' "$1" "$2" >>"$OUT/timings.txt"
}

if [[ ${E2E_KEEP:-0} != 1 ]]; then
  # Whatever happens below, no cluster is left behind (the pytest fixture deletes it too).
  trap 'hack/kind.sh down || true' EXIT
fi

t=$SECONDS
operator_image=$(PYTHON_IMAGE='' hack/images.sh operator)
step "operator image" $((SECONDS - t))
t=$SECONDS
standin_image=$(hack/images.sh standin)
step "Co-browse stand-in image" $((SECONDS - t))
t=$SECONDS
hack/images.sh node >/dev/null
step "kind, node image" $((SECONDS - t))

t=$SECONDS
rc=0
KIND_TIMINGS=$OUT/timings.txt E2E_FIGURES=$OUT/figures.txt E2E_CLUSTER=kind \
  E2E_OPERATOR_IMAGE=$operator_image E2E_STANDIN_IMAGE=$standin_image \
  E2E_KIND_LOAD="$operator_image $standin_image" \
  pytest -ra "${@:-tests/e2e}" || rc=$?
step "e2e suite on kind (cluster incl.)" $((SECONDS - t))
step "kind stage in all" $((SECONDS - start))
echo "== kind stage timings" >&2
cat "$OUT/timings.txt" >&2
if [[ -s $OUT/figures.txt ]]; then
  echo "== measured on kind" >&2
  cat "$OUT/figures.txt" >&2
fi
exit "$rc"
