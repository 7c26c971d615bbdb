#!/usr/bin/env bash
# Install what the tests need, then run lint, the layer contract, the type check and the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m slow for the full crash matrix).
# scripts/test.sh --dev runs the developer loop instead: unit, contract and integration tests (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/lint-imports
.venv/bin/mypy
if [[ "${1:-}" == "--dev" ]]; then
    shift
    set -- tests/unit tests/contract tests/integration "$@"
fi
exec .venv/bin/python -m pytest "$@"
