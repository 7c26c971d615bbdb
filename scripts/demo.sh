#!/usr/bin/env bash
# Strongroom on its embedded defaults, end to end, on this machine, in the seed's shape:
# a throwaway PostgreSQL cluster with sample data; two accounts in .demo/ (source and destination),
# bootstrapped in the seed's order from examples/mavis/; the destination serves its API on loopback;
# the source's daemon runs the example backup plan (every minute for the demo): a scheduled backup and
# its copy, events to a log file; then a backup and an incremental copy by hand after a change, a
# restore FROM THE DESTINATION into a NEW database, row checksums compared, verify --read-data in both.
# Installs what it needs first. Leaves both accounts in .demo/ to explore, with the cluster and the
# destination's API still running for the README's next commands: '. .demo/env.sh' puts strongroom on
# the PATH and sets $S and $D; 'scripts/demo.sh --stop' stops the cluster and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="$ROOT/.demo"
stop_previous_demo() {  # what an earlier demo left running (.demo/running: its cluster and API server)
  [ -f "$DEMO/running" ] || return 0
  # shellcheck disable=SC1091
  ( source scripts/demo-lib.sh; source "$DEMO/running"
    kill "$DEMO_SERVER_PID" 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl" -D "$DEMO_PGWORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DEMO_PGWORK" )
  rm -f "$DEMO/running"
}
if [ "${1:-}" = "--stop" ]; then stop_previous_demo; echo "demo: stopped its PostgreSQL cluster and API server"; exit 0; fi
stop_previous_demo
bash scripts/bootstrap.sh >&2

rm -rf "$DEMO"; mkdir -p "$DEMO"
SOURCE="$DEMO/source"
DESTINATION="$DEMO/destination"
source scripts/demo-lib.sh

PGWORK="$(mktemp -d /tmp/strongroom-demo-pg.XXXXXX)"
PORT="$(free_port)"
API_PORT="$(free_port)"
SOURCE_API_PORT="$(free_port)"
[ "$(id -u)" -eq 0 ] && chown postgres "$PGWORK"

SERVER_PID=""
DAEMON_PID=""
KEEP_RUNNING=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
  [ -n "$KEEP_RUNNING" ] && return 0   # done: the cluster and the API stay up for the README's commands
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$PGWORK/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$PGWORK"
}
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
# The app's role and its credentials in the source's secret store, as examples/mavis/dr-runbook.yaml expects
# (the README's DR lines run on this state). The demo's server trusts 127.0.0.1, so the password is not checked.
APP_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
"${PSQL[@]}" -d clinic -c "CREATE ROLE mavis LOGIN PASSWORD '$APP_PASSWORD'" \
  -c "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO mavis" \
  -c "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO mavis"
BEFORE="$(checksum clinic)"
echo "row checksums: $BEFORE"


say "Bootstrap steps 1-2: a state store (catalog, keys, apply lock) in each account"
dst init
src init
SOURCE_ID="$(src vaults describe Default --json | json_field '["backup_vault_arn"].split(":")[4]')"

say "Step 3: apply the destination's configuration (policy + compliance lock); it outputs the vault ARN"
dst apply -f examples/mavis/destination/destination.yaml --var-file examples/mavis/destination/env/production.yaml \
    --var "source_account_id=$SOURCE_ID" --auto-approve
DESTINATION_VAULT="$(dst output destination_vault_arn --raw)"
dst vaults describe mavis-destination

say "Step 4: put that ARN (and the database) into the source's var file"
sed -e "s|^destination_vault_arn:.*|destination_vault_arn: $DESTINATION_VAULT|" \
    -e "s|^database_dsn:.*|database_dsn: postgresql://postgres@127.0.0.1:$PORT/clinic|" \
    examples/mavis/source/env/production.yaml > "$DEMO/source-production.yaml"
{ echo "# Demo only: every minute instead of 07:00 and 19:00, and events to files in .demo/"
  echo "backup_schedule: cron(* * * * ? *)"
  echo "people_notification_url: log://$DEMO/people-notifications.jsonl"
  echo "events_log: log://$DEMO/events.jsonl"; } >> "$DEMO/source-production.yaml"
cat "$DEMO/source-production.yaml"

say "The destination serves its API on 127.0.0.1:$API_PORT; it issues the source a credential"
"$ROOT/.venv/bin/strongroom" --home "$DESTINATION" serve --port "$API_PORT" > "$DEMO/destination-serve.log" 2>&1 &
SERVER_PID=$!
CREDENTIAL="$(dst credentials create --principal source-copier --account-id "$SOURCE_ID" --json)"
KEY_ID="$(echo "$CREDENTIAL" | json_field '["access_key_id"]')"
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $API_PORT))" 2>/dev/null && break; sleep 0.2; done
echo "$CREDENTIAL" | json_field '["secret_access_key"]' | \
  src accounts add destination --endpoint "http://127.0.0.1:$API_PORT" --key-id "$KEY_ID"

printf '{"engine":"postgres","host":"127.0.0.1","port":%s,"username":"mavis","password":"%s","dbname":"clinic"}' \
  "$PORT" "$APP_PASSWORD" | src secrets put mavis/production/db --rds

say "Step 5: apply the source's configuration (vault, the tagged database, destination, backup plan)"
src apply -f examples/mavis/source/source.yaml --var-file "$DEMO/source-production.yaml" --auto-approve
src resources list

src plans describe mavis-postgres

say "The source's daemon (strongroom serve: scheduler + API) runs the plan: a backup, then its copy"
"$ROOT/.venv/bin/strongroom" --home "$SOURCE" serve --port "$SOURCE_API_PORT" --poll-seconds 5 \
    > "$DEMO/source-serve.log" 2>&1 &
DAEMON_PID=$!
echo "waiting for the next minute's scheduled backup and its copy to the destination ..."
completed() { src jobs list --json | python3 -c 'import json,sys
print(sum(j["state"] == "COMPLETED" for j in json.load(sys.stdin)["jobs"] if j["job_type"] in ("BACKUP", "COPY")))'; }
for _ in $(seq 90); do [ "$(completed)" -ge 2 ] && break; sleep 2; done
[ "$(completed)" -ge 2 ] || { echo "demo: no scheduled backup and copy; see $DEMO/source-serve.log" >&2; exit 1; }
kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
src jobs list
src plans runs
echo "events the scheduled jobs sent to log://$DEMO/events.jsonl:"
python3 - "$DEMO/events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    print(f"  {e['event']:<24} {e.get('state') or '':<10} {e.get('resource_id') or ''} {e.get('rule_name') or ''}")
PY

say "The app writes 500 rows; a backup and a copy by hand carry only what changed"
"${PSQL[@]}" -d clinic -c "INSERT INTO vaccinations (patient_id, vaccine, given_at, dose)
                           SELECT g, 'flu', now(), 0.5 FROM generate_series(1, 500) g"
AFTER_CHANGE="$(checksum clinic)"
src backup start --resource mavis-db --vault mavis-production --delete-after 60 --wait
LATEST="$(src recovery-points list --resource mavis-db --json | json_field '["recovery_points"][-1]["recovery_point_arn"]')"
src copy start --recovery-point "$LATEST" --wait
dst recovery-points list

say "The destination refuses what the source may not do (deleting its copy), in one line"
COPY_ARN="$(dst recovery-points list --json | json_field '["recovery_points"][-1]["recovery_point_arn"]')"
dst recovery-points delete "$COPY_ARN" || echo "(refused, as it should be: compliance lock)"

say "Restore FROM THE DESTINATION into a new database clinic_restored"
dst restore start --recovery-point "$COPY_ARN" --target "postgresql://postgres@127.0.0.1:$PORT/clinic_restored" --wait
RESTORED="$(checksum clinic_restored)"
echo "source:   $AFTER_CHANGE"
echo "restored: $RESTORED"
[ "$RESTORED" = "$AFTER_CHANGE" ] || { echo "demo: restored data differs from the source" >&2; exit 1; }
echo "restored rows are identical to the source"

say "verify --read-data in both accounts (decrypt and re-hash every chunk)"
src verify --read-data
dst verify --read-data

KEEP_RUNNING=1
{ echo "# Written by scripts/demo.sh. '. .demo/env.sh': strongroom on the PATH, \$S and \$D the demo's accounts."
  echo ". $(printf '%q' "$ROOT/.venv/bin/activate")"
  echo "export STRONGROOM_PASSPHRASE=$(printf '%q' "$STRONGROOM_PASSPHRASE")"
  echo "S=$(printf '%q' "strongroom --home $SOURCE"); D=$(printf '%q' "strongroom --home $DESTINATION")"; } > "$DEMO/env.sh"
{ echo "DEMO_PGWORK=$(printf '%q' "$PGWORK")"; echo "DEMO_SERVER_PID=$SERVER_PID"; } > "$DEMO/running"
say "Done. The demo's PostgreSQL (127.0.0.1:$PORT) and the destination's API (127.0.0.1:$API_PORT) keep running"
echo "Continue with the README's commands (its 'Disaster recovery' lines run as written):"
echo "  . .demo/env.sh            # activates .venv (strongroom on the PATH); \$S and \$D are the two accounts"
echo "  \$S jobs list; \$D recovery-points list"
echo "  scripts/demo.sh --stop    # stops the cluster and the API server"
