# Shared by scripts/demo.sh and scripts/dr-rehearsal.sh (sourced, after ROOT, SOURCE and DESTINATION are set):
# the two accounts' CLIs, headings, free ports, JSON fields, and the PostgreSQL server binaries.
export STRONGROOM_PASSPHRASE="${STRONGROOM_PASSPHRASE:-demo passphrase, change me}"
export COLUMNS="${COLUMNS:-150}"   # wide tables also when the output is piped
src() { "$ROOT/.venv/bin/strongroom" --home "$SOURCE" "$@"; }
dst() { "$ROOT/.venv/bin/strongroom" --home "$DESTINATION" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# Server tools run as the postgres OS user when we are root (initdb refuses root).
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$PGBIN" ] || PGBIN="$(dirname "$(command -v initdb)")"
