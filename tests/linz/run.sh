#!/usr/bin/env bash
# run.sh - records a history of concurrent clients against real syncd
# processes under faults (tests/linz/record.c) and checks it with Porcupine
# (tests/linz/checker): DESIGN.md's consistency, checked by a checker.
#
#   embedded  one node in the embedded default; the whole history, reads
#             included, must be linearizable. Built-in faults: the node
#             frozen with SIGSTOP for 3 s (longer than the requests'
#             timeout: writes in flight are of unknown outcome and may land
#             when it thaws); SIGKILLed and started again.
#   cluster   three nodes on FerretDB and Redis (scripts/cluster.sh), two
#             clients pinned to each node; the writes must be linearizable,
#             every read must return a version and value some write made,
#             and per client reads never go back and see its own writes.
#             Built-in faults: node 2 frozen with SIGSTOP for 3 s; node 3
#             SIGKILLed and started again; Redis stopped and started again;
#             Redis frozen for 2 s.
#
# The built-in faults repeat for as long as the recording runs. Environment:
#   SYNCD_LINZ_SECONDS     how long to record (default 12 embedded, 20
#                          cluster: one round of the built-in faults; 600
#                          before resolving an issue: the long run)
#   SYNCD_LINZ_CLIENTS     clients (default 6), SYNCD_LINZ_KEYS keys (3)
#   SYNCD_LINZ_EPOCH       seconds each set of keys is used before the
#                          clients move to fresh ones (default 15; see
#                          record.c: it keeps the checker's search small)
#   SYNCD_LINZ_TIMEOUT_MS  a request without an answer by then is of
#                          unknown outcome (default 2500)
#   SYNCD_LINZ_FAULTS      builtin (default) or none
#   SYNCD_LINZ_FAULT_HOOK  a command run (bash -c) in the background for the
#                          whole recording and ended (SIGTERM to its process
#                          group) when it stops: faults from outside, e.g.
#                          Toxiproxy. It gets SYNCD_LINZ_MODE,
#                          SYNCD_LINZ_SECONDS, SYNCD_LINZ_NODES (the URLs)
#                          and, in cluster mode, SYNCD_CLUSTER_DIR (so
#                          scripts/cluster.sh commands work; $DIR/env has
#                          the ports), or in embedded mode SYNCD_LINZ_PIDFILE.
#   SYNCD_LINZ_CHECK_TIMEOUT  the checker's search limit (default 5m)
#   SYNCD_LINZ_KEEP=1      keep the artifacts folder even when the check
#                          passes
#
# On a violation (or a check without a verdict) the history, the checker's
# report, Porcupine's visualization (HTML) and the node logs are kept in a
# folder under ARTIFACTS, whose path is printed, and the test fails.
#
# Usage: tests/linz/run.sh embedded|cluster SYNCD LINZ_RECORD LINZCHECK ARTIFACTS
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
USAGE="usage: run.sh embedded|cluster SYNCD LINZ_RECORD LINZCHECK ARTIFACTS"
MODE="${1:?$USAGE}"
export SYNCD_BIN="${2:?$USAGE}"
RECORD="${3:?$USAGE}"
CHECKER="${SYNCD_LINZCHECK:-${4:?$USAGE}}"
ARTIFACTS="${5:?$USAGE}"
SECONDS_TO_RUN="${SYNCD_LINZ_SECONDS:-}"
CLIENTS="${SYNCD_LINZ_CLIENTS:-6}"
KEYS="${SYNCD_LINZ_KEYS:-3}"
TIMEOUT_MS="${SYNCD_LINZ_TIMEOUT_MS:-2500}"
FAULTS="${SYNCD_LINZ_FAULTS:-builtin}"
CLUSTER="$ROOT/scripts/cluster.sh"

case "$MODE" in
embedded) SECONDS_TO_RUN="${SECONDS_TO_RUN:-12}" ;;
cluster) SECONDS_TO_RUN="${SECONDS_TO_RUN:-20}" ;;
*) echo "$USAGE" >&2; exit 2 ;;
esac
case "$FAULTS" in builtin | none) ;; *)
    echo "run.sh: SYNCD_LINZ_FAULTS must be builtin or none" >&2; exit 2 ;;
esac
[ -x "$CHECKER" ] || {
    echo "run.sh: no checker at $CHECKER (scripts/setup.sh builds it)" >&2
    exit 1
}

TMP="$(mktemp -d /tmp/syncd-test-linz-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
NODE_PORT=""
FAULT_PID=""
HOOK_PID=""

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The embedded node: started (again) on the same port and data dir.
start_embedded() {
    mkdir -p "$TMP/node1"
    "$SYNCD_BIN" --listen "127.0.0.1:$NODE_PORT" --data-dir "$TMP/node1/data" \
        --node-id linz-1 >>"$TMP/node1/syncd.log" 2>&1 &
    echo $! >"$TMP/node1/pid"
    # Its SIGKILL is a fault, not news.
    disown $!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$NODE_PORT/v1/health" >/dev/null 2>&1 && return 0
        alive "$TMP/node1/pid" || break
        sleep 0.1
    done
    echo "run.sh: the embedded node did not start (see $TMP/node1/syncd.log)" >&2
    return 1
}

stop_embedded() {
    local f="$TMP/node1/pid"
    if alive "$f"; then
        kill -CONT "$(cat "$f")" 2>/dev/null || true
        kill -TERM "$(cat "$f")" 2>/dev/null || true
        for _ in $(seq 100); do alive "$f" || break; sleep 0.1; done
        if alive "$f"; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
    fi
}

# stop_group PID: ends a background job started with setsid and its
# children.
stop_group() {
    [ -n "$1" ] || return 0
    kill -TERM -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    stop_group "$FAULT_PID"
    stop_group "$HOOK_PID"
    if [ "$MODE" = cluster ]; then
        "$CLUSTER" stop >/dev/null 2>&1 || true
    else
        stop_embedded
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# pause PIDFILE SECONDS: freezes a process with SIGSTOP, then thaws it.
pause() {
    local pid
    pid="$(cat "$1")"
    echo "fault: SIGSTOP $(basename "$(dirname "$1")") for $2 s" >&2
    kill -STOP "$pid"
    sleep "$2"
    kill -CONT "$pid"
}

embedded_faults() {
    while :; do
        sleep 3
        pause "$TMP/node1/pid" 3
        sleep 3
        echo "fault: SIGKILL the node, start it again" >&2
        kill -KILL "$(cat "$TMP/node1/pid")"
        sleep 0.5
        start_embedded
    done
}

cluster_faults() {
    while :; do
        sleep 3
        pause "$SYNCD_CLUSTER_DIR/node2/pid" 3
        sleep 3
        echo "fault: SIGKILL node 3, start it again" >&2
        "$CLUSTER" kill-node 3
        sleep 0.5
        "$CLUSTER" start-node 3
        sleep 3
        echo "fault: stop Redis, start it again" >&2
        "$CLUSTER" stop-redis
        sleep 1
        "$CLUSTER" start-redis
        sleep 3
        echo "fault: SIGSTOP Redis for 2 s" >&2
        "$CLUSTER" pause-redis
        sleep 2
        "$CLUSTER" resume-redis
    done
}

if [ "$MODE" = cluster ]; then
    "$CLUSTER" start >/dev/null
    # shellcheck disable=SC1091
    . "$SYNCD_CLUSTER_DIR/env"
    NODES=("$NODE1" "$NODE2" "$NODE3")
    LOGS=("$SYNCD_CLUSTER_DIR"/node*/syncd.log)
else
    NODE_PORT="$(free_port)"
    start_embedded
    export SYNCD_LINZ_PIDFILE="$TMP/node1/pid"
    NODES=("http://127.0.0.1:$NODE_PORT")
    LOGS=("$TMP/node1/syncd.log")
fi

export SYNCD_LINZ_MODE="$MODE" SYNCD_LINZ_SECONDS="$SECONDS_TO_RUN"
export SYNCD_LINZ_NODES="${NODES[*]}"
if [ -n "${SYNCD_LINZ_FAULT_HOOK:-}" ]; then
    setsid bash -c "$SYNCD_LINZ_FAULT_HOOK" &
    HOOK_PID=$!
fi
if [ "$FAULTS" = builtin ]; then
    setsid bash -c "$(declare -f alive pause start_embedded ${MODE}_faults);
        TMP='$TMP' NODE_PORT='$NODE_PORT' CLUSTER='$CLUSTER' ${MODE}_faults" &
    FAULT_PID=$!
fi

HISTORY="$TMP/history.jsonl"
echo "linz: recording $SECONDS_TO_RUN s, $CLIENTS clients on $KEYS keys, faults: $FAULTS${SYNCD_LINZ_FAULT_HOOK:+ and the hook}" >&2
"$RECORD" --out "$HISTORY" --seconds "$SECONDS_TO_RUN" --clients "$CLIENTS" \
    --keys "$KEYS" --epoch-seconds "${SYNCD_LINZ_EPOCH:-15}" \
    --timeout-ms "$TIMEOUT_MS" --coll linz "${NODES[@]}"
stop_group "$FAULT_PID"
FAULT_PID=""
stop_group "$HOOK_PID"
HOOK_PID=""

status=0
"$CHECKER" -mode "$MODE" -html "$TMP/linearizability.html" \
    -timeout "${SYNCD_LINZ_CHECK_TIMEOUT:-5m}" "$HISTORY" |
    tee "$TMP/report.txt" || status=$?
if [ "$status" -ne 0 ] || [ "${SYNCD_LINZ_KEEP:-0}" = 1 ]; then
    KEEP="$ARTIFACTS/$MODE-$(date -u +%Y%m%dT%H%M%SZ)-$$"
    mkdir -p "$KEEP"
    cp "$HISTORY" "$TMP/report.txt" "$KEEP/"
    [ -f "$TMP/linearizability.html" ] && cp "$TMP/linearizability.html" "$KEEP/"
    for f in "${LOGS[@]}"; do
        [ -f "$f" ] && cp "$f" "$KEEP/$(basename "$(dirname "$f")")-syncd.log"
    done
    if [ "$status" -eq 0 ]; then
        echo "linz: history and report kept in $KEEP" >&2
    else
        echo "linz: FAIL ($MODE): history, report and visualization kept in $KEEP" >&2
        exit 1
    fi
fi
echo "linz: PASS ($MODE)"
