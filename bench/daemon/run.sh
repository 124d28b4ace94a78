#!/bin/sh
# run.sh - syncd (embedded default) against single-node etcd 3.4, same
# workloads, same run.
#
# Builds syncd and bench_daemon in Release mode without sanitizers, starts
# a private syncd (temp data dir) and a private etcd (temp data dir) on free
# loopback ports, measures point reads of one hot key and of keys chosen
# uniformly at random among MANY_KEYS (wrk), blind puts (wrk),
# compare-and-swap increments (bench_daemon cas) at each connection count
# and watch propagation latency (bench_daemon watch), prints Markdown
# tables, then stops both servers and removes the temp dir.
#
# Usage: bench/daemon/run.sh
# Environment: SECONDS_PER_CELL (default 10), CONNECTIONS (default
# "1 8 64"), WATCH_COUNT (default 2000) and WATCH_RATE (default 200 per
# second), MANY_KEYS (default 100000), WORKLOADS (default "read random put
# cas add watch": which tables to run), SYNCD_BENCH_BUILD (default
# build-benchd), SYNCD_FLAGS (extra syncd flags, e.g. "--sync-writes
# false"). Every workload uses keys of its own.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/daemon"
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-benchd}
SECS=${SECONDS_PER_CELL:-10}
CONNECTIONS=${CONNECTIONS:-"1 8 64"}
WATCH_COUNT=${WATCH_COUNT:-2000}
WATCH_RATE=${WATCH_RATE:-200}
MANY_KEYS=${MANY_KEYS:-100000}
WORKLOADS=${WORKLOADS:-"read random put cas add watch"}
SYNCD_FLAGS=${SYNCD_FLAGS:-}
TMP=$(mktemp -d /tmp/syncd-bench-daemon-XXXXXX)
SYNCD_PID=
ETCD_PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    stop_pid "$SYNCD_PID"
    stop_pid "$ETCD_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# http_up NAME PID LOG CURL-ARGS...: polls until the server answers 200.
http_up() {
    up_name=$1 up_pid=$2 up_log=$3
    shift 3
    wait_up "$up_name" "$up_pid" "$up_log" 100 0.1 curl -sf -o /dev/null "$@"
}

# CPU time (clock ticks, user + system) the process has used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# field LINE KEY: the value of KEY=... in a result line.
field() {
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# syncd_metric NAME: the current value of an unlabelled syncd counter.
syncd_metric() {
    curl -s "http://$SYNCD/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

TICK=$(getconf CLK_TCK)

# wanted NAME: succeeds when NAME is one of WORKLOADS.
wanted() {
    case " $WORKLOADS " in *" $1 "*) return 0 ;; esac
    return 1
}

# row WORKLOAD CONNS SERVER PID FAILED CMD...: runs one cell, prints its row.
row() {
    workload=$1 conns=$2 server=$3 pid=$4 failed=$5
    shift 5
    before=$(cpu_ticks "$pid")
    out=$("$@")
    after=$(cpu_ticks "$pid")
    secs=$(field "$out" secs)
    cpu=$(awk -v t="$((after - before))" -v hz="$TICK" -v s="$secs" \
        'BEGIN { printf "%.0f%%", 100 * t / hz / s }')
    conflicts=$(field "$out" conflicts)
    verified=$(field "$out" verified)
    case "$failed" in
    -) failed=${conflicts:--} ;;
    *) failed="${conflicts:-0} ($failed)" ;;
    esac
    echo "| $workload | $conns | $server | $(field "$out" per_sec) |" \
        "$(field "$out" p50_ms) | $(field "$out" p99_ms) | $failed |" \
        "$(field "$out" errors) | $cpu | ${verified:--} |"
}

threads() {
    if [ "$1" -lt 2 ]; then echo 1; else echo 2; fi
}

# wrk_cell MODE KEY CONNS ADDR: one wrk run with wrk.lua.
wrk_cell() {
    BENCH_MODE=$1 BENCH_KEY=$2 BENCH_KEYS=$MANY_KEYS wrk -t"$(threads "$3")" \
        -c"$3" -d"${SECS}s" -s "$HERE/wrk.lua" "http://$4" | tail -n 1
}

bench_build "$BUILD" syncd bench_daemon
BENCH="$BUILD/bench/bench_daemon"

SYNCD=127.0.0.1:$(free_port)
ETCD=127.0.0.1:$(free_port)
PEER=127.0.0.1:$(free_port)
# Every benchmark connection comes from this one address.
# shellcheck disable=SC2086 # SYNCD_FLAGS is a list of flags
"$BUILD/syncd/syncd" --data-dir "$TMP/syncd" --listen "$SYNCD" \
    --log-level warn --max-connections-per-client 1024 $SYNCD_FLAGS \
    >"$TMP/syncd.log" 2>&1 &
SYNCD_PID=$!
etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
    --listen-peer-urls "http://$PEER" \
    --initial-advertise-peer-urls "http://$PEER" \
    --initial-cluster "bench=http://$PEER" --log-level warn \
    >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
http_up syncd "$SYNCD_PID" "$TMP/syncd.log" "http://$SYNCD/v1/health"
http_up etcd "$ETCD_PID" "$TMP/etcd.log" -X POST -d '{"key":"AA=="}' \
    "http://$ETCD/v3/kv/range"

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores" \
    "($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))," \
    "load $(cut -d ' ' -f 1-3 /proc/loadavg), kernel $(uname -r)"
echo "# syncd $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" \
    "(the checkout; binary $BUILD/syncd/syncd, sha256" \
    "$(sha256sum "$BUILD/syncd/syncd" | cut -c 1-12)," \
    "embedded default${SYNCD_FLAGS:+, $SYNCD_FLAGS}), etcd" \
    "$(etcd --version | sed -n 's/^etcd Version: //p'), wrk" \
    "$(wrk -v 2>&1 | sed -n '1s/^wrk \([^ ]*\).*/\1/p'), ${SECS}s per cell"
echo
echo "| workload | conns | server | ops/s | p50 ms | p99 ms | failed attempts | errors | server CPU | verified |"
echo "|---|---|---|---|---|---|---|---|---|---|"

if wanted read; then
    "$BENCH" seed --target syncd --addr "$SYNCD" --key read
    "$BENCH" seed --target etcd --addr "$ETCD" --key read
    for c in $CONNECTIONS; do
        row "point read 1 KB" "$c" syncd "$SYNCD_PID" - \
            wrk_cell syncd-get read "$c" "$SYNCD"
        row "point read 1 KB" "$c" "etcd (linearizable)" "$ETCD_PID" - \
            wrk_cell etcd-range read "$c" "$ETCD"
        row "point read 1 KB" "$c" "etcd (serializable)" "$ETCD_PID" - \
            wrk_cell etcd-serial read "$c" "$ETCD"
    done
fi
if wanted random; then
    "$BENCH" seed-many --target syncd --addr "$SYNCD" --key k \
        --count "$MANY_KEYS" --connections 32
    "$BENCH" seed-many --target etcd --addr "$ETCD" --key k \
        --count "$MANY_KEYS" --connections 32
    for c in $CONNECTIONS; do
        row "point read 1 KB, $MANY_KEYS keys uniform" "$c" syncd "$SYNCD_PID" - \
            wrk_cell syncd-get-random k "$c" "$SYNCD"
        row "point read 1 KB, $MANY_KEYS keys uniform" "$c" "etcd (linearizable)" \
            "$ETCD_PID" - wrk_cell etcd-range-random k "$c" "$ETCD"
        row "point read 1 KB, $MANY_KEYS keys uniform" "$c" "etcd (serializable)" \
            "$ETCD_PID" - wrk_cell etcd-serial-random k "$c" "$ETCD"
    done
fi
if wanted put; then
    for c in $CONNECTIONS; do
        row "blind put 1 KB" "$c" syncd "$SYNCD_PID" - \
            wrk_cell syncd-put "put$c" "$c" "$SYNCD"
        row "blind put 1 KB" "$c" etcd "$ETCD_PID" - \
            wrk_cell etcd-put "put$c" "$c" "$ETCD"
    done
fi
if wanted cas; then
    # Like for like first: both clients read, compute and write the whole
    # document with a version precondition, retrying on conflict.
    for c in $CONNECTIONS; do
        row "CAS increment" "$c" "syncd PUT If-Match (read-modify-write)" \
            "$SYNCD_PID" - "$BENCH" cas --target syncd --mode put \
            --addr "$SYNCD" --key "rmw$c" --connections "$c" --seconds "$SECS"
        row "CAS increment" "$c" "etcd txn (read-modify-CAS)" "$ETCD_PID" - \
            "$BENCH" cas --target etcd --addr "$ETCD" --key "cas$c" \
            --connections "$c" --seconds "$SECS"
        row "CAS increment" "$c" "syncd PATCH If-Match (replace /n)" \
            "$SYNCD_PID" - "$BENCH" cas --target syncd --mode strict \
            --addr "$SYNCD" --key "strict$c" --connections "$c" --seconds "$SECS"
    done
fi
# Not a compare-and-swap: each client sets its own field, so the server's
# edit loop never meets a conflict by construction.
if wanted add; then
    for c in $CONNECTIONS; do
        retries=$(syncd_metric syncd_edit_retries_total)
        out=$(row "distinct-field add (no conflicts)" "$c" \
            "syncd PATCH (edit loop)" "$SYNCD_PID" RETRIES "$BENCH" cas \
            --target syncd --mode edit --addr "$SYNCD" --key "edit$c" \
            --connections "$c" --seconds "$SECS")
        retries=$(($(syncd_metric syncd_edit_retries_total) - retries))
        echo "$out" | sed "s/(RETRIES)/(server retries $retries)/"
    done
fi
if wanted watch; then
    echo
    echo "Watch propagation, $WATCH_COUNT updates at $WATCH_RATE/s, one watcher (ms):"
    echo
    echo "| server | events | ack→event p50 | p99 | p999 | send→event p50 | p99 | p999 | events before ack |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for target in syncd etcd; do
        if [ "$target" = syncd ]; then addr=$SYNCD; else addr=$ETCD; fi
        out=$("$BENCH" watch --target "$target" --addr "$addr" --key watched \
            --count "$WATCH_COUNT" --rate "$WATCH_RATE")
        echo "| $target | $(field "$out" events)/$(field "$out" writes) |" \
            "$(field "$out" ack_p50_ms) | $(field "$out" ack_p99_ms) |" \
            "$(field "$out" ack_p999_ms) | $(field "$out" send_p50_ms) |" \
            "$(field "$out" send_p99_ms) | $(field "$out" send_p999_ms) |" \
            "$(field "$out" early) |"
    done
fi
echo
echo "# load at the end $(cut -d ' ' -f 1-3 /proc/loadavg)"
