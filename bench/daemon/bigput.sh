#!/bin/sh
# bigput.sh - whole-document PUTs of the 10,000-volume collection document
# (1.75 MB, one volume changed per PUT) against the embedded default, and
# what each costs the server.
#
# Usage: bench/daemon/bigput.sh
# Environment: MODE (put, the default: whole-document PUTs; patch: the same
# changes as JSON Patch PATCHes of the one volume, bench_daemon big-patch),
# ROUNDS (default 3), COUNT PUTs per cell after the first
# (default 30), SYNCD_BIN (default the Release build's syncd) and
# SYNCD_BIN_BEFORE (a second binary, e.g. a build of an earlier commit:
# the cells then alternate between the two, the order swapped each round).
#
# Each cell starts a fresh syncd (temp data dir, free loopback port),
# creates the document, then sends COUNT PUTs one at a time over one
# connection (bench_daemon big-put). A row gives their latency p50/p99 and
# the server's CPU time per PUT, read from /proc around them.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-benchd}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-30}
MODE=${MODE:-put}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_scratch bigput

bench_build "$BUILD" syncd bench_daemon
AFTER=${SYNCD_BIN:-$BUILD/syncd/syncd}
BEFORE=${SYNCD_BIN_BEFORE:-}
TICK=$(getconf CLK_TCK)

# cell LABEL BIN: one row of the table.
cell() {
    addr=127.0.0.1:$(free_ports 1)
    rm -rf "$TMP/data"
    "$2" --data-dir "$TMP/data" --listen "$addr" --log-level warn \
        --max-doc-bytes 16MiB >"$TMP/server.log" 2>&1 &
    PID=$!
    wait_up syncd "$PID" "$TMP/server.log" 100 0.1 \
        curl -sf -o /dev/null "http://$addr/v1/health"
    before=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    out=$("$BUILD/bench/bench_daemon" "big-$MODE" --target syncd --addr "$addr" \
        --key big --count "$COUNT")
    after=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    stop_pid "$PID"
    PID=
    echo "$out" | awk -v label="$1" -v round="$round" -v cpu=$((after - before)) \
        -v tick="$TICK" -v n="$COUNT" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        printf "| %s | %d | %s | %s | %s | %s | %.0f |\n", label, round,
            f["puts"], f["bytes"], f["p50_ms"], f["p99_ms"],
            cpu * 1000 / tick / (n + 1)
    }'
}

echo "# syncd $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| syncd | round | PUTs | bytes | p50 ms | p99 ms | server CPU ms/PUT |"
echo "|---|---|---|---|---|---|---|"
round=1
while [ "$round" -le "$ROUNDS" ]; do
    if [ -n "$BEFORE" ] && [ $((round % 2)) -eq 1 ]; then
        cell before "$BEFORE"
        cell after "$AFTER"
    elif [ -n "$BEFORE" ]; then
        cell after "$AFTER"
        cell before "$BEFORE"
    else
        cell syncd "$AFTER"
    fi
    round=$((round + 1))
done
