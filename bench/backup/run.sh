#!/bin/sh
# run.sh - backup and restore of N documents of 1 KB (default 100,000)
# through a real syncd, in the embedded default and with FerretDB as the
# store of record, in documents per second.
#
# Builds syncd, syncctl and backup_seed (Release, no sanitizers) in
# build-bench/ (or $SYNCD_BENCH_BUILD), then times:
#   embedded backup   syncctl backup of an embedded node holding N
#                     documents (seeded with tests/backup_seed);
#   embedded restore  syncctl restore of that file into an empty embedded
#                     node (PUTs from 8 writers, fsync per commit);
#   FerretDB backup   syncctl backup of one node over a private FerretDB
#                     (v1.24 on SQLite) holding FBN documents inserted
#                     directly (FerretDB scans the whole collection for
#                     every page, so this row stays at thousands);
#   FerretDB restore  syncctl restore of FN documents into node 1 of a
#                     cluster (scripts/cluster.sh: FerretDB, Redis, three
#                     nodes); every write goes through the FerretDB commit
#                     chain (storage/mongo.c).
# Prints one line per case: documents, seconds, documents/s, file bytes.
#
# Usage: bench/backup/run.sh [N [FN [FBN]]]   (defaults 100000, 500
# and 5000)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-bench}
FERRETDB=${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}
N=${1:-100000}
FN=${2:-500}
FBN=${3:-5000}
TMP=$(mktemp -d /tmp/syncd-bench-backup-XXXXXX)
NODE_PID= FDB_PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    stop_pid "$NODE_PID"
    stop_pid "$FDB_PID"
    if [ -f "$TMP/cluster/env" ]; then
        SYNCD_CLUSTER_DIR="$TMP/cluster" "$ROOT/scripts/cluster.sh" stop \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

bench_build "$BUILD" syncd syncctl backup_seed
SYNCD=$BUILD/syncd/syncd
SYNCCTL=$BUILD/syncd/syncctl

# start_node NAME FLAGS...: starts syncd on a free port, sets URL.
start_node() {
    name=$1
    shift
    port=$(free_port)
    "$SYNCD" --listen "127.0.0.1:$port" --log-level warn "$@" \
        >"$TMP/$name.log" 2>&1 &
    NODE_PID=$!
    URL=http://127.0.0.1:$port
    wait_up "syncd $name" "$NODE_PID" "$TMP/$name.log" 150 0.1 \
        curl -sf -o /dev/null "$URL/v1/health"
}

# timed CASE COUNT FILE CMD...: runs CMD and prints the case's line.
timed() {
    what=$1 count=$2 file=$3
    shift 3
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    python3 -c 'import sys; n, s = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3]); print("| %s | %d | %.1f | %.0f | %s |" % (sys.argv[1], n, s, n / s, sys.argv[5]))' \
        "$what" "$count" "$t0" "$t1" "$(stat -c %s "$file")"
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $N documents of 1 KB (FerretDB: backup $FBN, restore $FN)"
echo "| case | documents | seconds | documents/s | file bytes |"
echo "|---|---|---|---|---|"
mkdir -p "$TMP/seed/store"
"$BUILD/tests/backup_seed" "$TMP/seed" big "$N" 1024
start_node seed --data-dir "$TMP/seed"
timed "embedded backup" "$N" "$TMP/backup.jsonl" "$SYNCCTL" --server "$URL" backup big --out "$TMP/backup.jsonl"
stop_pid "$NODE_PID"
start_node restore --data-dir "$TMP/restore"
timed "embedded restore" "$N" "$TMP/backup.jsonl" "$SYNCCTL" --server "$URL" restore "$TMP/backup.jsonl"
stop_pid "$NODE_PID"

# The FerretDB restore input: FN documents of collection small.
mkdir -p "$TMP/fseed/store"
"$BUILD/tests/backup_seed" "$TMP/fseed" small "$FN" 1024
start_node fseed --data-dir "$TMP/fseed"
"$SYNCCTL" --server "$URL" backup small --out "$TMP/small.jsonl" >/dev/null
stop_pid "$NODE_PID"

# FerretDB backup: one node over a private FerretDB (no other node's
# anti-entropy scanning the collection meanwhile).
FPORT=$(free_port)
mkdir -p "$TMP/fdb"
"$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
    --listen-addr="127.0.0.1:$FPORT" --state-dir="$TMP" \
    --telemetry=disable --log-level=warn --debug-addr=- \
    >"$TMP/ferretdb.log" 2>&1 &
FDB_PID=$!
tcp_up() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $FPORT), 1)" \
        2>/dev/null
}
wait_up FerretDB "$FDB_PID" "$TMP/ferretdb.log" 150 0.2 tcp_up
"$BUILD/tests/backup_seed" "mongodb://127.0.0.1:$FPORT/" big "$FBN" 1024 \
    2>/dev/null
start_node ferret --data-dir "$TMP/ferret" \
    --mongo-uri "mongodb://127.0.0.1:$FPORT/"
timed "FerretDB backup" "$FBN" "$TMP/again.jsonl" \
    "$SYNCCTL" --server "$URL" backup big --out "$TMP/again.jsonl"
stop_pid "$NODE_PID"
stop_pid "$FDB_PID"

# FerretDB restore: into node 1 of a cluster (writes need Redis).
export SYNCD_BIN="$SYNCD" SYNCD_CLUSTER_DIR="$TMP/cluster" SYNCD_FERRETDB="$FERRETDB"
"$ROOT/scripts/cluster.sh" start >/dev/null
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
timed "FerretDB restore" "$FN" "$TMP/small.jsonl" \
    "$SYNCCTL" --server "$NODE1" restore "$TMP/small.jsonl"
