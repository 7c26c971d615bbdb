#!/usr/bin/env bash
# Run the S3 store's tests against a real S3 implementation that no one here wrote: Ceph's RADOS Gateway.
#
# Brings up a throwaway single-node Ceph cluster (one monitor, one memstore OSD, one radosgw) under a temp
# directory on 127.0.0.1, no systemd, cephx with generated keys; creates an S3 user with radosgw-admin; runs
# the store contract suite, the S3 store's own tests (conditional writes, Object Lock), the CLI's S3 tests and the
# copies into an S3 destination vault (tests/e2e/test_s3_destination.py) against
# it through STRONGROOM_TEST_S3_ENDPOINT (tests/support/s3server.py); tears everything down on exit.
#
#   scripts/s3-check.sh                 # the default selection below
#   scripts/s3-check.sh tests/integration/test_s3_store.py -k lock   # arguments replace the selection
#   KEEP=1 scripts/s3-check.sh          # keep the cluster's directory (logs) after the run
#
# Needs root once, to apt-get install the Ceph packages (Debian 12: Ceph 16.2 Pacific). Not part of CI: it
# installs ~200 MB of packages and starts three daemons. Outcome and RGW's deviations: docs/storage.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "s3-check: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 || {
        echo "s3-check: apt-get install failed; see above (a half-configured package: dpkg --configure -a)" >&2
        exit 1
    }
fi
[[ -x .venv/bin/python ]] || bash scripts/bootstrap.sh

DIR=$(mktemp -d /tmp/strongroom-ceph.XXXXXX)
CONF=$DIR/ceph.conf
PIDS=()
CLUSTER_UP=""
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP:-}" || -z "$CLUSTER_UP" ]]; then
        echo "s3-check: cluster directory kept (ceph.conf, log/, keys): $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { .venv/bin/python -c 'from strongroom.adapters.postgres.tools import free_port; print(free_port())'; }
MON_PORT=$(free_port)
RGW_PORT=$(free_port)
FSID=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$DIR"/{run,log,mon/ceph-a,osd/ceph-0}

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind ipv4 = true
auth allow insecure global id reclaim = false
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $DIR/mon/ceph-a
[osd.0]
osd data = $DIR/osd/ceph-0
osd objectstore = memstore
memstore device bytes = 4294967296
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
EOF
# Cephx with throwaway keys, all in one keyring under $DIR that every daemon and tool here reads; the
# monitor imports them (with their capabilities) when it is created.
authtool() { ceph-authtool "$DIR/keyring" "$@" >/dev/null; }
authtool --create-keyring --gen-key -n mon. --cap mon 'allow *'
authtool --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *'
authtool --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd'
authtool --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw'
chmod 600 "$DIR/keyring"

ceph_() { timeout 60 ceph -c "$CONF" "$@"; }

echo "s3-check: monitor on 127.0.0.1:$MON_PORT" >&2
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring"
ceph-mon -c "$CONF" -i a -f >>"$DIR/log/mon.out" 2>&1 &
PIDS+=($!)
ceph_ mon stat >/dev/null

echo "s3-check: one memstore OSD" >&2
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph_ osd new "$OSD_UUID" 0)
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$DIR/log/osd-mkfs.log" 2>&1
ceph-osd -c "$CONF" -i "$OSD_ID" -f >>"$DIR/log/osd.out" 2>&1 &
PIDS+=($!)
for attempt in $(seq 1 120); do
    ceph_ osd stat -f json | grep -q '"num_up_osds":1' && break
    ((attempt < 120)) || { echo "s3-check: the OSD did not come up ($DIR/log)" >&2; exit 1; }
    sleep 0.5
done

echo "s3-check: radosgw on 127.0.0.1:$RGW_PORT" >&2
mkdir -p "$DIR/rgw"
radosgw -c "$CONF" -n client.rgw.a -f >>"$DIR/log/rgw.out" 2>&1 &
PIDS+=($!)
for attempt in $(seq 1 240); do
    curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/" && break
    ((attempt < 240)) || { echo "s3-check: radosgw did not answer ($DIR/log)" >&2; exit 1; }
    sleep 0.5
done

# The user's keys are generated by radosgw-admin and read from its output, never passed as arguments.
radosgw-admin -c "$CONF" -n client.admin user create --uid=strongroom --display-name="Strongroom s3-check" \
    >"$DIR/user.json" 2>"$DIR/log/radosgw-admin.log"
chmod 600 "$DIR/user.json"
read -r AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY < <(.venv/bin/python -c '
import json, sys
key = json.load(open(sys.argv[1]))["keys"][0]
print(key["access_key"], key["secret_key"])' "$DIR/user.json")
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
CLUSTER_UP=1  # from here on a failure is the tests'; the directory goes unless KEEP is set
export STRONGROOM_TEST_S3_ENDPOINT="http://127.0.0.1:$RGW_PORT"
echo "s3-check: $(radosgw --version | head -1); tests against $STRONGROOM_TEST_S3_ENDPOINT" >&2

if (($# == 0)); then
    # -k s3 keeps the contract suite to the s3 scheme; every test of the other files has s3 in its id (the
    # module's name counts). test_s3_destination.py: copies into an S3 destination through serve, copy back, DR;
    # test_packs.py: pack objects (vault format 2); test_wal_copy.py: copied WAL under an Object Lock.
    set -- tests/contract/test_store_contract.py tests/integration/test_s3_store.py \
        tests/integration/test_object_lock_retention.py tests/e2e/test_s3_vault.py tests/e2e/test_s3_object_lock.py \
        tests/e2e/test_vault_attach.py tests/e2e/test_s3_destination.py tests/integration/test_packs.py \
        tests/e2e/test_wal_copy.py tests/e2e/test_s3_records_claim.py -k "s3 or S3 or lock or contract"
fi
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider -rfE "$@" || status=$?
exit $status
