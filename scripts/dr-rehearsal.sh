#!/usr/bin/env bash
# One command: the seed's disaster recovery, rehearsed and then run for real, on embedded defaults.
#
# A throwaway PostgreSQL cluster holds the sample app's patients (examples/sample-app); the app is handed its
# database credentials from the source account's secret store and serves rows on 127.0.0.1. Two accounts
# in .demo-dr/ are bootstrapped from examples/mavis/ (the database as a physical postgres-cluster
# resource); a backup is copied to the destination. Then examples/mavis/dr-runbook.yaml - the seed's
# seven steps - is dry-run, rehearsed (everything it makes is removed again), and, after a disaster
# (the cluster's data directory destroyed), run for real from the DESTINATION vault: copy back, restore
# as mavis-production-restored, repoint the app's secret, adopt into the backup plan, restart the app.
# The app's checksum after the recovery must equal the one at the backup. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2

ROOT="$PWD"
DEMO="$(mktemp -d /tmp/strongroom-dr-demo.XXXXXX)"   # /tmp: the postgres OS user must reach restored clusters
chmod 711 "$DEMO"
ln -sfn "$DEMO" "$ROOT/.demo-dr"
SOURCE="$DEMO/source"
DESTINATION="$DEMO/destination"
SR="$ROOT/.venv/bin/strongroom"
PY="$ROOT/.venv/bin/python"
source scripts/demo-lib.sh

PORT="$(free_port)"; API_PORT="$(free_port)"; APP_PORT="$(free_port)"
mkdir "$DEMO/pg"; [ "$(id -u)" -eq 0 ] && chown postgres "$DEMO/pg"
APP_STATE="$DEMO/app-state.json"
APPCTL=("$PY" "$ROOT/examples/sample-app/appctl.py")
SERVER_PID=""
cleanup() {
  "${APPCTL[@]}" stop --state "$APP_STATE" >/dev/null 2>&1 || true
  # Stop every cluster a run restored (the real run's; a rehearsal removed its own).
  src dr list --json 2>/dev/null | python3 -c 'import json,sys
for r in json.load(sys.stdin)["runs"]: print(r["run_id"])' 2>/dev/null | while read -r run; do
    stop="$(src dr describe "$run" --json 2>/dev/null | python3 -c 'import json,sys
print((json.load(sys.stdin).get("restored") or {}).get("stop_command") or "")' 2>/dev/null || true)"
    if [ -n "$stop" ]; then eval "$stop -m fast" >/dev/null 2>&1 || true; fi
  done
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "A throwaway PostgreSQL cluster on 127.0.0.1:$PORT: the sample app's database (role mavis, 200 patients)"
as_pg "$PGBIN/initdb" -D "$DEMO/pg/data" -U postgres -A trust >/dev/null
cat > "$DEMO/pg/data/pg_hba.conf" <<'HBA'
local all all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -l "$DEMO/pg/log" -w \
  -o "-p $PORT -k $DEMO/pg -c listen_addresses=127.0.0.1" start >/dev/null
APP_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -c "CREATE ROLE mavis LOGIN PASSWORD '$APP_PASSWORD'" -c "CREATE DATABASE mavis OWNER mavis"
PGPASSWORD="$APP_PASSWORD" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U mavis -d mavis \
  -f examples/sample-app/schema.sql

say "Two accounts bootstrapped from examples/mavis/ (the database as a postgres-cluster resource)"
dst init >/dev/null; src init >/dev/null
SOURCE_ID="$(src vaults describe Default --json | json_field '["backup_vault_arn"].split(":")[4]')"
dst apply -f examples/mavis/destination/destination.yaml --var-file examples/mavis/destination/env/production.yaml \
    --var "source_account_id=$SOURCE_ID" --auto-approve >/dev/null
DESTINATION_VAULT="$(dst output destination_vault_arn --raw)"
"$SR" --home "$DESTINATION" serve --port "$API_PORT" > "$DEMO/destination-serve.log" 2>&1 &
SERVER_PID=$!
CREDENTIAL="$(dst credentials create --principal source-copier --account-id "$SOURCE_ID" --json)"
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $API_PORT))" 2>/dev/null && break; sleep 0.2; done
echo "$CREDENTIAL" | json_field '["secret_access_key"]' | \
  src accounts add destination --endpoint "http://127.0.0.1:$API_PORT" \
      --key-id "$(echo "$CREDENTIAL" | json_field '["access_key_id"]')" >/dev/null
sed -e "s|^destination_vault_arn:.*|destination_vault_arn: $DESTINATION_VAULT|" \
    -e "s|^database_dsn:.*|database_dsn: postgresql://postgres@127.0.0.1:$PORT/postgres|" \
    examples/mavis/source/env/production.yaml > "$DEMO/source-production.yaml"
{ echo "database_type: postgres-cluster"
  echo "people_notification_url: log://$DEMO/people-notifications.jsonl"
  echo "events_log: log://$DEMO/events.jsonl"; } >> "$DEMO/source-production.yaml"
src apply -f examples/mavis/source/source.yaml --var-file "$DEMO/source-production.yaml" --auto-approve >/dev/null
src resources list

say "The app's credentials go into the secret store; the app is handed them at start (never the passphrase)"
printf '{"engine":"postgres","host":"127.0.0.1","port":%s,"username":"mavis","password":"%s","dbname":"mavis"}' \
  "$PORT" "$APP_PASSWORD" | src secrets put mavis/production/db --rds
# The runbook's deploy step hands the app its secret the same way (env: APP_DB_SECRET: ${secret...}).
APP_DB_SECRET="$(src secrets get mavis/production/db --json)" env -u STRONGROOM_PASSPHRASE \
  "${APPCTL[@]}" start --state "$APP_STATE" -- --secret-env APP_DB_SECRET --secret mavis/production/db --port "$APP_PORT"
AT_BACKUP="$(curl -fsS "http://127.0.0.1:$APP_PORT/checksum")"
echo "the app serves: $AT_BACKUP"

say "A backup of the cluster, copied to the destination vault"
src backup start --resource mavis-db --vault mavis-production --delete-after 60 --wait
LATEST="$(src recovery-points list --resource mavis-db --json | json_field '["recovery_points"][-1]["recovery_point_arn"]')"
src copy start --recovery-point "$LATEST" --wait
"${PSQL[@]}" -d mavis -c "INSERT INTO patients (id, name) VALUES (9001, 'admitted after the backup')"

DR_VARS=(--var FROM_ACCOUNT=destination --var VAULT=mavis-destination
         --var "DEPLOY_COMMAND=${APPCTL[*]} restart --state $APP_STATE"
         --var "HEALTH_URL=http://127.0.0.1:$APP_PORT/health")

say "strongroom dr run --dry-run: what would happen, step by step (nothing is changed)"
src dr run examples/mavis/dr-runbook.yaml "${DR_VARS[@]}" --dry-run

say "strongroom dr rehearse: the whole runbook against scratch names, then everything removed"
src dr rehearse examples/mavis/dr-runbook.yaml "${DR_VARS[@]}"
echo "left behind: clusters: [$(ls "$SOURCE/clusters" 2>/dev/null | tr '\n' ' ')] secrets: [$(src secrets list --json | python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)["secrets"]))')]"

say "The disaster: the database server dies and its data directory is gone"
as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -m immediate stop >/dev/null
rm -rf "$DEMO/pg/data"
curl -sS -o /dev/null -w "the app's health check now answers %{http_code}\n" "http://127.0.0.1:$APP_PORT/health" || true

say "strongroom dr run: the seed's seven steps, from the destination vault"
src dr run examples/mavis/dr-runbook.yaml "${DR_VARS[@]}"

AFTER="$(curl -fsS "http://127.0.0.1:$APP_PORT/checksum")"
echo "at the backup: $AT_BACKUP"
echo "after the DR:  $AFTER"
[ "$AFTER" = "$AT_BACKUP" ] || { echo "dr-rehearsal: the app does not serve the recovery point's data" >&2; exit 1; }
echo "the app serves exactly the data of the recovery point (the row written after it is lost: that is the RPO)"
src plans describe mavis-postgres | grep -A2 -i selected || true
say "Done. The accounts are in $DEMO (.demo-dr links there); the restored cluster and the app were stopped."
