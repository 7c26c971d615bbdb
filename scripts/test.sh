#!/usr/bin/env bash
# Install what the tests need, then run lint, the layer contract, the type check and the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m slow for the full crash matrix; -n 0 to run serially).
# scripts/test.sh --dev runs the developer loop instead: unit, contract and integration tests (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/lint-imports
.venv/bin/mypy
if [[ "${1:-}" == "--dev" ]]; then
    shift
    set -- tests/unit tests/contract tests/integration "$@"
fi
# One pytest-xdist worker per logical CPU (PYTEST_XDIST_AUTO_NUM_WORKERS=N to choose), unless the arguments say how
# to run: -n N (-n 0: serially, in this process), --dist MODE or -p no:xdist. docs/testing.md.
workers=(-n logical) dist=(--dist loadgroup)
for arg in "$@"; do
    case "$arg" in
        -n | -n* | --numprocesses | --numprocesses=*) workers=() ;;
        --dist | --dist=*) dist=() ;;
        no:xdist | -pno:xdist) workers=() dist=() ;;
    esac
done
exec .venv/bin/python -m pytest "${workers[@]}" "${dist[@]}" "$@"
