#!/usr/bin/env bash
# The whole test suite: lint, types, unit, interop and end-to-end tests.
# Installs what it needs first (see hack/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
eval "$(hack/build-binaries.sh --print-env)"
eval "$(hack/build-prometheus.sh --print-env)"

echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy" && mypy
echo "== pytest"
exec pytest -ra "$@"
