#!/bin/sh
# run.sh - build bench_store (Release, no sanitizers), start a private
# MongoDB-wire server on a free loopback port (FerretDB, or
# mongo-java-server, whose filtered updates are atomic, so that syncd takes
# the single-operation compare-and-swap of MongoDB there), run the storage
# benchmark against it and the embedded default, then stop the server and
# remove the temp dir.
#
# Usage: bench/storage/run.sh [SECONDS_PER_CASE] [ferretdb|mongo-java-server]
# (defaults: 2, ferretdb)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-bench}
FERRETDB=${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}
MONGO_JAVA=${SYNCD_MONGO_JAVA:-$ROOT/.tools/bin/mongo-java-server}
SECONDS_PER_CASE=${1:-2}
SERVER=${2:-ferretdb}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_scratch storage

bench_build "$BUILD" bench_store

PORT=$(free_port)
case "$SERVER" in
ferretdb)
    mkdir -p "$TMP/fdb"
    "$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
        --listen-addr="127.0.0.1:$PORT" --state-dir="$TMP" \
        --telemetry=disable --log-level=warn --debug-addr=- \
        >"$TMP/server.log" 2>&1 &
    VERSION="FerretDB $("$FERRETDB" --version 2>/dev/null | head -1)"
    ;;
mongo-java-server)
    "$MONGO_JAVA" "$PORT" >"$TMP/server.log" 2>&1 &
    VERSION="mongo-java-server 1.47.0 (memory backend), $(java -version 2>&1 | head -1)"
    ;;
*)
    echo "usage: $0 [SECONDS_PER_CASE] [ferretdb|mongo-java-server]" >&2
    exit 2
    ;;
esac
PID=$!
# tcp_up: succeeds once something accepts connections on $PORT.
tcp_up() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" \
        2>/dev/null
}
wait_up "$SERVER" "$PID" "$TMP/server.log" 150 0.2 tcp_up

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $VERSION, ${SECONDS_PER_CASE}s per case"
"$BUILD/bench/bench_store" --data-dir "$TMP/data" \
    --mongo-uri "mongodb://127.0.0.1:$PORT/" --seconds "$SECONDS_PER_CASE"
