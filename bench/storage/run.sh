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

cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DSYNCD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j2 --target bench_store >/dev/null

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$TMP/fdb"
"$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
    --listen-addr="127.0.0.1:$PORT" --state-dir="$TMP" \
    --telemetry=disable --log-level=warn --debug-addr=- \
    >"$TMP/ferretdb.log" 2>&1 &
PID=$!
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 150 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "FerretDB did not start; log:" >&2
        cat "$TMP/ferretdb.log" >&2
        exit 1
    fi
    sleep 0.2
done

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, FerretDB $("$FERRETDB" --version 2>/dev/null | head -1), ${SECONDS_PER_CASE}s per case"
"$BUILD/bench/bench_store" --data-dir "$TMP/data" \
    --mongo-uri "mongodb://127.0.0.1:$PORT/" --seconds "$SECONDS_PER_CASE"
