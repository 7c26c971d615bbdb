#!/usr/bin/env bash
# Strongroom on its embedded defaults, end to end, on this machine:
# a throwaway PostgreSQL cluster with sample data -> an account in .demo/home -> backup ->
# list -> restore into a NEW database -> row checksums compared -> verify --read-data.
# Installs what it needs first. Leaves the account in .demo/ to explore; stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2

ROOT="$PWD"
DEMO="$ROOT/.demo"
rm -rf "$DEMO"; mkdir -p "$DEMO"
export STRONGROOM_HOME="$DEMO/home"
export STRONGROOM_PASSPHRASE="${STRONGROOM_PASSPHRASE:-demo passphrase, change me}"
sr() { "$ROOT/.venv/bin/strongroom" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$PGBIN" ] || PGBIN="$(dirname "$(command -v initdb)")"
PGWORK="$(mktemp -d /tmp/strongroom-demo-pg.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$PGWORK"

cleanup() { as_pg "$PGBIN/pg_ctl" -D "$PGWORK/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PGWORK"; }
trap cleanup EXIT

say "A throwaway PostgreSQL cluster on 127.0.0.1:$PORT with sample data"
as_pg "$PGBIN/initdb" -D "$PGWORK/data" -U postgres -A trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGWORK/data" -l "$PGWORK/log" -w \
  -o "-p $PORT -k $PGWORK -c listen_addresses=127.0.0.1" start >/dev/null
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -c "CREATE DATABASE clinic"
"${PSQL[@]}" -d clinic <<'SQL'
CREATE TABLE patients (id bigserial PRIMARY KEY, nhs_number text UNIQUE NOT NULL, name text NOT NULL,
                       born date, details jsonb, photo bytea);
CREATE TABLE vaccinations (id bigserial PRIMARY KEY, patient_id bigint REFERENCES patients(id),
                           vaccine text NOT NULL, given_at timestamptz NOT NULL, dose numeric(6,3),
                           batch text[]);
CREATE INDEX ON vaccinations (given_at);
CREATE VIEW recent AS SELECT p.name, v.vaccine, v.given_at FROM patients p JOIN vaccinations v ON v.patient_id = p.id
                      WHERE v.given_at > now() - interval '30 days';
INSERT INTO patients (nhs_number, name, born, details, photo)
  SELECT lpad(g::text, 10, '0'), 'Patient ' || g, date '1940-01-01' + (g * 7) % 30000,
         jsonb_build_object('gp', 'Practice ' || g % 97, 'allergies', CASE WHEN g % 5 = 0 THEN '["latex"]'::jsonb END),
         decode(md5(g::text), 'hex')
  FROM generate_series(1, 50000) g;
INSERT INTO vaccinations (patient_id, vaccine, given_at, dose, batch)
  SELECT 1 + g % 50000, (ARRAY['flu','covid-19','mmr','hpv'])[1 + g % 4], now() - (g || ' minutes')::interval,
         0.5 + (g % 7) / 10.0, ARRAY['B' || g % 13, NULL]
  FROM generate_series(1, 150000) g;
SQL
checksum() {
  "${PSQL[@]}" -d "$1" -At -c "SELECT string_agg(t || ':' || s, ' ') FROM (
     SELECT 'patients' t, md5(string_agg(md5(p::text), '' ORDER BY p.id)) s FROM patients p UNION ALL
     SELECT 'vaccinations', md5(string_agg(md5(v::text), '' ORDER BY v.id)) FROM vaccinations v) x"
}
BEFORE="$(checksum clinic)"
echo "row checksums: $BEFORE"

say "strongroom init   (account, catalog, keys and the Default vault in $STRONGROOM_HOME)"
sr init

say "strongroom resources add clinic --type postgres --dsn postgresql://postgres@127.0.0.1:$PORT/clinic"
sr resources add clinic --type postgres --dsn "postgresql://postgres@127.0.0.1:$PORT/clinic" --tag backup=True
sr resources list

say "strongroom backup start --resource clinic --wait   (twice: the second stores almost nothing new)"
sr backup start --resource clinic --wait
"${PSQL[@]}" -d clinic -c "INSERT INTO vaccinations (patient_id, vaccine, given_at, dose)
                           SELECT g, 'flu', now(), 0.5 FROM generate_series(1, 500) g"
AFTER_CHANGE="$(checksum clinic)"
sr backup start --resource clinic --wait
sr recovery-points list

ARN="$(sr recovery-points list --resource clinic --json | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["recovery_points"][-1]["recovery_point_arn"])')"

say "strongroom restore start --recovery-point <latest> --target .../clinic_restored --wait"
sr restore start --recovery-point "$ARN" --target "postgresql://postgres@127.0.0.1:$PORT/clinic_restored" --wait
RESTORED="$(checksum clinic_restored)"
echo "source:   $AFTER_CHANGE"
echo "restored: $RESTORED"
[ "$RESTORED" = "$AFTER_CHANGE" ] || { echo "demo: restored data differs from the source" >&2; exit 1; }
echo "restored rows are identical to the source"

say "strongroom verify --read-data   (decrypt and re-hash every chunk of every recovery point)"
sr verify --read-data

say "Done. Explore the account: STRONGROOM_HOME=$STRONGROOM_HOME .venv/bin/strongroom jobs list"
