#!/bin/sh
# run.sh - backup and restore of N documents of 1 KB (default 100,000)
# through a real syncd, in the embedded default and with FerretDB as the
# store of record, in documents per second.
#
# Builds syncd, syncctl and backup_seed (Release, no sanitizers) in
# build-bench/ (or $SYNCD_BENCH_BUILD), fills an embedded store with
# tests/backup_seed, then times:
#   embedded backup   syncctl backup of the seeded node (GET .../export);
#   embedded restore  syncctl restore of that file into an empty embedded
#                     node (one PUT per document, fsync per commit);
#   FerretDB restore  the same file into an empty node over a private
#                     FerretDB (--mongo-uri, in-process bus);
#   FerretDB backup   syncctl backup of that node.
# Prints one line per case: documents, seconds, documents/s, file bytes.
#
# Usage: bench/backup/run.sh [N]
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-bench}
FERRETDB=${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}
N=${1:-100000}
TMP=$(mktemp -d /tmp/syncd-bench-backup-XXXXXX)
FDB_PID= NODE_PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    stop_pid "$NODE_PID"
    stop_pid "$FDB_PID"
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

# timed CASE CMD...: runs CMD and prints the case's line.
timed() {
    what=$1
    shift
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    python3 -c 'import sys; n, s = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3]); print("| %s | %d | %.1f | %.0f | %s |" % (sys.argv[1], n, s, n / s, sys.argv[5]))' \
        "$what" "$N" "$t0" "$t1" "$(stat -c %s "$TMP/backup.jsonl")"
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $N documents of 1 KB"
echo "| case | documents | seconds | documents/s | file bytes |"
echo "|---|---|---|---|---|"
mkdir -p "$TMP/seed/store"
"$BUILD/tests/backup_seed" "$TMP/seed" big "$N" 1024
start_node seed --data-dir "$TMP/seed"
timed "embedded backup" "$SYNCCTL" --server "$URL" backup big --out "$TMP/backup.jsonl"
stop_pid "$NODE_PID"
start_node restore --data-dir "$TMP/restore"
timed "embedded restore" "$SYNCCTL" --server "$URL" restore "$TMP/backup.jsonl"
stop_pid "$NODE_PID"

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
start_node ferret --data-dir "$TMP/ferret" \
    --mongo-uri "mongodb://127.0.0.1:$FPORT/"
timed "FerretDB restore" "$SYNCCTL" --server "$URL" restore "$TMP/backup.jsonl"
mv "$TMP/backup.jsonl" "$TMP/first.jsonl"
timed "FerretDB backup" "$SYNCCTL" --server "$URL" backup big --out "$TMP/backup.jsonl"
