#!/usr/bin/env bash
# Install what Strongroom needs on a fresh Debian/Ubuntu machine: PostgreSQL server binaries
# (for the postgres resource types and the tests) and a virtual environment with Strongroom.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg_server() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if ! have_pg_server || ! command -v pg_dump >/dev/null 2>&1; then
  echo "bootstrap: installing PostgreSQL (server binaries are missing)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import strongroom, pytest, pyfastcdc" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
