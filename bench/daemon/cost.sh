#!/usr/bin/env bash
# cost.sh - what one blind put costs the server: syncd (embedded default)
# against single-node etcd, measured the same way in the same run.
#
# Usage: bench/daemon/cost.sh
#   CONNECTIONS        wrk connections per cell (default "1 8 64")
#   SECONDS_PER_CELL   length of the measured part of a cell (default 6)
#   WARM_SECONDS       puts before it, so that each server's write-ahead
#                      log and memtables are past their first files (20)
#
# Each cell starts a fresh server (syncd, then etcd, the order alternating
# per cell), sends it blind puts of the 1 KB document of run.sh (wrk.lua)
# on one key for WARM_SECONDS, then for SECONDS_PER_CELL while `perf stat`
# counts, for the server's process alone: fdatasync calls, block requests
# issued (the data, metadata and cache-flush requests of its syncs) and
# context switches; its CPU time comes from /proc. Each is divided by the
# puts answered while it counted. Needs wrk, etcd, perf (Debian's
# linux-perf) and root for the tracepoints.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/daemon"
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-benchd}
SECS=${SECONDS_PER_CELL:-6}
WARM=${WARM_SECONDS:-20}
CONNECTIONS=${CONNECTIONS:-"1 8 64"}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_scratch cost

EVENTS=syscalls:sys_enter_fdatasync,block:block_rq_issue,context-switches
TICK=$(getconf CLK_TCK)

# start SERVER ADDR DIR PEER: starts a fresh server on ADDR with its data
# in DIR (etcd's peer URL on PEER); sets PID.
start() {
    case $1 in
    syncd)
        "$BUILD/syncd/syncd" --data-dir "$3" --listen "$2" --log-level warn \
            --max-connections-per-client 1024 >"$TMP/server.log" 2>&1 &
        PID=$!
        wait_up syncd "$PID" "$TMP/server.log" 100 0.1 \
            curl -sf -o /dev/null "http://$2/v1/health"
        ;;
    etcd)
        peer=127.0.0.1:$4
        etcd --name cost --data-dir "$3" --listen-client-urls "http://$2" \
            --advertise-client-urls "http://$2" --listen-peer-urls "http://$peer" \
            --initial-advertise-peer-urls "http://$peer" \
            --initial-cluster "cost=http://$peer" --log-level warn \
            >"$TMP/server.log" 2>&1 &
        PID=$!
        wait_up etcd "$PID" "$TMP/server.log" 100 0.1 \
            curl -sf -o /dev/null -X POST -d '{"key":"AA=="}' \
            "http://$2/v3/kv/range"
        ;;
    esac
}

# puts SERVER ADDR CONNS SECONDS: blind puts on one key; prints wrk.lua's
# summary line.
puts() {
    threads=$(($3 < 2 ? 1 : 2))
    BENCH_MODE=$1-put BENCH_KEY=cost BENCH_KEYS=1 wrk -t"$threads" -c"$3" \
        -d"$4s" -s "$HERE/wrk.lua" "http://$2" | tail -n 1
}

# cell SERVER CONNS: one row of the table.
cell() {
    ports=$(free_ports 2)
    addr=127.0.0.1:${ports% *}
    rm -rf "$TMP/data"
    start "$1" "$addr" "$TMP/data" "${ports#* }"
    puts "$1" "$addr" "$2" "$WARM" >/dev/null
    before=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    perf stat -x, -e "$EVENTS" -p "$PID" -o "$TMP/perf" &
    perf_pid=$!
    out=$(puts "$1" "$addr" "$2" "$SECS")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    after=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
    stop_pid "$PID"
    PID=
    echo "$out" | tr ' ' '\n' | awk -F= -v server="$1" -v conns="$2" \
        -v ticks="$((after - before))" -v hz="$TICK" -v perf="$TMP/perf" '
        { f[$1] = $2 }
        END {
            while ((getline line < perf) > 0) {
                split(line, p, ",")
                if (p[3] != "") n[p[3]] = p[1]
            }
            ops = f["ops"]
            printf "| %s | %d | %d | %d | %.2f | %.2f | %.1f | %.0f | %s |\n",
                server, conns, f["per_sec"], ops,
                n["syscalls:sys_enter_fdatasync"] / ops,
                n["block:block_rq_issue"] / ops,
                n["context-switches"] / ops, 1e6 * ticks / hz / ops,
                f["errors"]
        }'
}

bench_build "$BUILD" syncd
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores" \
    "($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))," \
    "load $(cut -d ' ' -f 1-3 /proc/loadavg), kernel $(uname -r)"
echo "# syncd $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" \
    "(embedded default), etcd" \
    "$(etcd --version | sed -n 's/^etcd Version: //p'), ${WARM}s warm-up," \
    "${SECS}s measured per cell"
echo
echo "| server | conns | puts/s | puts | fdatasyncs/put | block requests/put | context switches/put | CPU us/put | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
flip=0
for c in $CONNECTIONS; do
    if [ "$flip" -eq 0 ]; then
        cell syncd "$c"
        cell etcd "$c"
    else
        cell etcd "$c"
        cell syncd "$c"
    fi
    flip=$((1 - flip))
done
