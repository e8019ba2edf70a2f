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

# One command per line: under `set -e` a failure inside an `a && b` list does not stop the
# script (only the list's last command does), so lint errors would pass unnoticed.
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
pytest -ra "$@"
kind_stage=${KIND_STAGE:-$(($# == 0))}
if [[ $kind_stage == 1 ]]; then
  echo "== kind stage"
  exec hack/kind-e2e.sh
fi
