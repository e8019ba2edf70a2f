#!/usr/bin/env bash
# The whole test suite: lint, types, unit, interop and end-to-end tests on the local control
# plane, then the kind stage (hack/kind-e2e.sh: the image, kind, the chart and real pods).
# Installs what it needs first (see hack/setup.sh). Extra arguments go to pytest and run only
# that selection, without the kind stage unless KIND_STAGE=1; KIND_STAGE=0 skips it always.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
eval "$(hack/build-binaries.sh --print-env)"
eval "$(hack/build-prometheus.sh --print-env)"

echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy" && mypy
echo "== pytest"
pytest -ra "$@"
kind_stage=${KIND_STAGE:-$(($# == 0))}
if [[ $kind_stage == 1 ]]; then
  echo "== kind stage"
  exec hack/kind-e2e.sh
fi
