#!/usr/bin/env bash
# test_cluster.sh - three syncd nodes, FerretDB and Redis (scripts/cluster.sh)
# under a concurrent write storm with faults, driven over HTTP and syncctl
# only; watchers are checked against the versions the store committed.
#
# Watchers: `syncctl watch c --since 0` on nodes 1 and 3, and on node 2
# until it is killed, then resumed on node 3 from its last seq (as a client
# would, with --since).
#
# Phase 1: 6 clients each add 200 distinct keys to one of three documents
# (two clients per document, on two different nodes, so their
# compare-and-swaps conflict) with JSON Patch and no If-Match (a retried
# add of the same key changes nothing, so a retry after a lost answer
# cannot double-count). Mid-storm node 2 is SIGKILLed and restarted. Then
# every node serves each document with 400 keys at version 401.
#
# Phase 2: 3 more clients, one per document and node, add 200 keys each
# while Redis is stopped for 3 s (saving its data, as a persistent Redis
# does) and started again, then
# node 3 is frozen with SIGSTOP for 5 s, and meanwhile Redis is frozen with
# SIGSTOP for 2 s. Then every node serves each document with 600 keys at
# version 601.
#
# Before the storm a fourth document is created, patched and deleted.
#
# After each phase every watcher's stream must hold, for every document,
# each version the store (FerretDB, read directly by tests/stream_check.c)
# committed exactly once, in increasing order (a tombstone's as a delete),
# with seqs 1, 2, 3, ...
# without a gap (DESIGN.md sections 4 and 5). Violations are printed with
# the versions each fault window covered, so a miss can be placed. Both
# phases are checked before the test fails.
#
# Usage: tests/test_cluster.sh SYNCD SYNCCTL STREAM_CHECK
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SYNCD_BIN="${1:?usage: test_cluster.sh SYNCD SYNCCTL STREAM_CHECK}"
SYNCCTL="${2:?usage: test_cluster.sh SYNCD SYNCCTL STREAM_CHECK}"
CHECK="${3:?usage: test_cluster.sh SYNCD SYNCCTL STREAM_CHECK}"
TMP="$(mktemp -d /tmp/syncd-test-cluster-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--anti-entropy-interval 2s --max-retries 100 --log-level info"
CLUSTER="$ROOT/scripts/cluster.sh"
KEYS=200 # adds per client
WATCHERS=()
CLIENTS=()
FAILED=()
MARKS=""

cleanup() {
    local p
    for p in "${CLIENTS[@]}" "${WATCHERS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$CLUSTER" stop || true
    rm -rf "$TMP"
}
trap cleanup EXIT

logs() {
    local f
    for f in "$SYNCD_CLUSTER_DIR"/node*/syncd.log; do
        echo "--- $f" >&2
        tail -n 20 "$f" >&2 || true
    done
    for f in "$TMP"/w*.err; do
        [ -s "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }
    done
    return 0
}

fail() {
    echo "test_cluster: FAIL: $*" >&2
    logs
    exit 1
}

"$CLUSTER" start
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES=("$NODE1" "$NODE2" "$NODE3")
DOCS=(d1 d2 d3)

# doc NAME: the URL path of document NAME.
doc() {
    echo "/v1/collections/c/docs/$1"
}

for d in "${DOCS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"items":{}}' \
        "$NODE1$(doc "$d")")
    [ "$code" = 201 ] || fail "create of $d answered $code"
done
# A document created, changed and deleted on three nodes: its tombstone's
# version must reach the watchers as a delete.
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"a":1}' \
    "$NODE1$(doc gone)")
code="$code $(curl -s -o /dev/null -w '%{http_code}' -X PATCH \
    -H 'Content-Type: application/merge-patch+json' -d '{"a":2}' \
    "$NODE2$(doc gone)")"
code="$code $(curl -s -o /dev/null -w '%{http_code}' -X DELETE \
    "$NODE3$(doc gone)")"
[ "$code" = "201 200 200" ] || fail "create, patch, delete answered $code"

# watch NAME NODE SINCE: syncctl watch into $TMP/NAME, in the background;
# its pid goes into WATCHERS and into the variable NAME_PID.
watch() {
    "$SYNCCTL" --server "$2" watch c --since "$3" >"$TMP/$1" 2>"$TMP/$1.err" &
    WATCHERS+=($!)
    printf -v "$1_PID" %s $!
}
watch w1 "$NODE1" 0
watch w3 "$NODE3" 0
watch w2a "$NODE2" 0

# client I NODE DOC: KEYS adds of distinct keys to DOC, each retried until
# it is 200.
client() {
    local i="$1" node="$2" path k code
    path=$(doc "$3")
    for k in $(seq "$KEYS"); do
        for _ in $(seq 600); do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
                -X PATCH -H 'Content-Type: application/json-patch+json' \
                -d "[{\"op\":\"add\",\"path\":\"/items/c$i-$k\",\"value\":$k}]" \
                "$node$path" || true)
            [ "$code" = 200 ] && break
            sleep 0.1
        done
        [ "$code" = 200 ] || { echo "client $i: key $k answered $code" >&2; exit 1; }
    done
}

# version NODE DOC: the document's version as NODE serves it (its ETag).
version() {
    curl -s -D - -o /dev/null --max-time 5 "$1$(doc "$2")" | tr -d '\r"' |
        awk 'tolower($1)=="etag:" {print $2}'
}

# mark WHAT: notes the documents' versions at a fault boundary (read on
# node 1 while clients write, so approximate to a few versions).
mark() {
    local d line="  $1 at about"
    for d in "${DOCS[@]}"; do line="$line $d v$(version "$NODE1" "$d")"; done
    MARKS="$MARKS$line
"
}

# keys FILE: how many client keys ("cI-K") the document body in FILE holds.
keys() {
    grep -o '"c[0-9]*-[0-9]*":' "$1" | wc -l
}

# converged EXPECTED_KEYS: every node serves every document with that many
# keys at version keys+1, retried for up to ~5 anti-entropy intervals.
converged() {
    local want="$1" n d etag ok
    for _ in $(seq 100); do
        ok=1
        for n in "${NODES[@]}"; do
            for d in "${DOCS[@]}"; do
                etag=$(curl -s -D - -o "$TMP/body" --max-time 5 \
                    "$n$(doc "$d")" | tr -d '\r' |
                    awk 'tolower($1)=="etag:" {print $2}')
                if [ "$(keys "$TMP/body")" != "$want" ] ||
                    [ "$etag" != "\"$((want + 1))\"" ]; then
                    ok=0
                fi
            done
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# bus_seq: the highest event seq any node lists for the collection.
bus_seq() {
    local n s max=0
    for n in "${NODES[@]}"; do
        s=$(curl -s --max-time 5 "$n/v1/collections/c/docs?limit=1" |
            grep -o '"seq":[0-9]*' | head -n 1 | cut -d: -f2)
        [ "${s:-0}" -gt "$max" ] && max=$s
    done
    echo "$max"
}

# check_streams PHASE: waits (bounded) until every watcher reached the
# bus's seq or one of them ended, then checks every stream against the
# store; a violation is recorded in FAILED and printed.
check_streams() {
    local phase="$1" seq p alive
    seq=$(bus_seq)
    for _ in $(seq 300); do
        "$CHECK" reached "$seq" "$TMP/w1" "$TMP/w3" "$TMP/w2a+$TMP/w2b" && break
        alive=1
        for p in "$w1_PID" "$w3_PID" "$w2b_PID"; do
            kill -0 "$p" 2>/dev/null || alive=0
        done
        [ "$alive" = 1 ] || break
        sleep 0.1
    done
    echo "test_cluster: $phase: watchers against the store (bus seq $seq)"
    if ! "$CHECK" check "$MONGO_URI" syncd c "$TMP/w1" "$TMP/w3" \
        "$TMP/w2a+$TMP/w2b"; then
        FAILED+=("$phase: watcher streams break the every-version contract (above)")
        printf 'test_cluster: %s: fault windows:\n%s' "$phase" "$MARKS"
    fi
}

# Phase 1: the storm, with node 2 killed and restarted.
for i in 1 2 3 4 5 6; do
    client "$i" "${NODES[$((i % 3))]}" "${DOCS[$(((i - 1) / 2))]}" &
    CLIENTS+=($!)
done
sleep 3
mark "node 2 SIGKILLed"
"$CLUSTER" kill-node 2
# Node 2's watcher lost its node: resume it on node 3 from its last seq.
kill "$w2a_PID" 2>/dev/null || true
wait "$w2a_PID" 2>/dev/null || true
watch w2b "$NODE3" "$("$CHECK" last "$TMP/w2a")"
sleep 1
"$CLUSTER" start-node 2
mark "node 2 restarted"
for p in "${CLIENTS[@]}"; do wait "$p" || fail "a client gave up"; done
CLIENTS=()
converged $((2 * KEYS)) ||
    fail "nodes do not all serve $((2 * KEYS)) keys at version $((2 * KEYS + 1))"
MARKS="$MARKS  phase 1 ended at v$((2 * KEYS + 1)) of each document
"
check_streams "phase 1 (node 2 killed)"

# Phase 2: writes while Redis is stopped, then frozen, and node 3 frozen.
for i in 1 2 3; do
    client "7$i" "${NODES[$((i - 1))]}" "${DOCS[$((i - 1))]}" &
    CLIENTS+=($!)
done
sleep 1
mark "Redis stopped"
"$CLUSTER" stop-redis
sleep 3
"$CLUSTER" start-redis
mark "Redis started"
sleep 1
mark "node 3 SIGSTOPped"
kill -STOP "$(cat "$SYNCD_CLUSTER_DIR/node3/pid")"
sleep 1
mark "Redis SIGSTOPped"
"$CLUSTER" pause-redis
sleep 2
"$CLUSTER" resume-redis
mark "Redis SIGCONTed"
sleep 2
kill -CONT "$(cat "$SYNCD_CLUSTER_DIR/node3/pid")"
mark "node 3 SIGCONTed"
for p in "${CLIENTS[@]}"; do wait "$p" || fail "a client gave up in phase 2"; done
CLIENTS=()
converged $((3 * KEYS)) ||
    fail "nodes diverge after the Redis faults and the pause"
MARKS="$MARKS  phase 2 ended at v$((3 * KEYS + 1)) of each document
"
check_streams "phase 2 (Redis stopped, Redis and node 3 frozen)"

if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'test_cluster: FAIL: %s\n' "${FAILED[@]}" >&2
    logs
    exit 1
fi
echo "test_cluster: OK ($((3 * KEYS)) keys per document on every node; every watcher saw every committed version)"
