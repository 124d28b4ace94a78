#!/bin/sh
# run.sh - build bench_store (Release, no sanitizers), start a private
# FerretDB on a free loopback port, run the storage benchmark against it and
# the embedded default, then stop FerretDB and remove the temp dir.
#
# Usage: bench/storage/run.sh [SECONDS_PER_CASE]   (default 2)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-bench}
FERRETDB=${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}
SECONDS_PER_CASE=${1:-2}
TMP=$(mktemp -d /tmp/syncd-bench-storage-XXXXXX)
PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    stop_pid "$PID"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

bench_build "$BUILD" bench_store

PORT=$(free_port)
mkdir -p "$TMP/fdb"
"$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
    --listen-addr="127.0.0.1:$PORT" --state-dir="$TMP" \
    --telemetry=disable --log-level=warn --debug-addr=- \
    >"$TMP/ferretdb.log" 2>&1 &
PID=$!
# tcp_up: succeeds once something accepts connections on $PORT.
tcp_up() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" \
        2>/dev/null
}
wait_up FerretDB "$PID" "$TMP/ferretdb.log" 150 0.2 tcp_up

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, FerretDB $("$FERRETDB" --version 2>/dev/null | head -1), ${SECONDS_PER_CASE}s per case"
"$BUILD/bench/bench_store" --data-dir "$TMP/data" \
    --mongo-uri "mongodb://127.0.0.1:$PORT/" --seconds "$SECONDS_PER_CASE"
