#!/usr/bin/env bash
# test_writebehind.sh - the node cache written behind, on a real cluster
# (FerretDB, Redis and three syncd nodes from scripts/cluster.sh, each with
# --keep-cache).
#
# 60 updates of one document through node 1 in a burst: node 2, which
# follows the collection from its start and puts each version an event
# announces in its cache (applied or refetched), serves the last one, and
# its metric syncd_cache_writes_total shows it wrote that document's record
# to its cache's RocksDB at most once per second of the burst (plus one),
# not 60 times. Node 2 stopped cleanly (SIGTERM, which writes what is
# dirty) and started again on its kept cache serves the current version at
# once. Then node 2 is killed with SIGKILL after more updates, and more are
# committed while it is down: started again, its very first read serves
# exactly the store's version and body (its cache of the killed run is
# never served).
#
# Usage: tests/test_writebehind.sh SYNCD
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SYNCD_BIN="${1:?usage: test_writebehind.sh SYNCD}"
TMP="$(mktemp -d /tmp/syncd-test-writebehind-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--keep-cache true"
CLUSTER="$ROOT/scripts/cluster.sh"

cleanup() {
    "$CLUSTER" stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_writebehind: FAIL: $*" >&2
    tail -n 20 "$SYNCD_CLUSTER_DIR/node2/syncd.log" >&2 || true
    exit 1
}

# put_n FROM TO: updates doc w through node 1 to {"n":i} for i in FROM..TO.
put_n() {
    local i
    for i in $(seq "$1" "$2"); do
        curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' \
            -d "{\"n\":$i}" "$NODE1/v1/collections/wb/docs/w" ||
            fail "PUT n=$i"
    done
}

# served URL: prints "ETAG BODY" of doc w as URL serves it.
served() {
    curl -sf -D "$TMP/h" "$1/v1/collections/wb/docs/w" >"$TMP/b" || true
    printf '%s %s\n' "$(sed -n 's/^ETag: "\([0-9]*\)".*/\1/Ip' "$TMP/h" | tr -d '\r')" \
        "$(cat "$TMP/b")"
}

# wait_served URL WANT: waits (bounded) until URL serves WANT.
wait_served() {
    local _
    for _ in $(seq 100); do
        [ "$(served "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 serves '$(served "$1")', want '$2'"
}

metric() {
    curl -sf "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

"$CLUSTER" start >/dev/null || fail "the cluster did not start"
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
echo "test_writebehind: cluster started (${SECONDS} s)"

stop_node2() {
    local pid _
    pid=$(cat "$SYNCD_CLUSTER_DIR/node2/pid")
    kill "-$1" "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    fail "node 2 did not stop on SIG$1"
}

# The collection exists before node 2 starts again, so node 2 follows it
# on the bus from its start and caches every version the events announce.
put_n 0 0
stop_node2 TERM
"$CLUSTER" start-node 2 >/dev/null || fail "node 2 did not start again"
wait_served "$NODE2" '1 {"n":0}'

before=$(metric "$NODE2" syncd_cache_writes_total)
received=$(metric "$NODE2" syncd_events_received_total)
start=$SECONDS
put_n 1 60
wait_served "$NODE2" '61 {"n":60}'
elapsed=$((SECONDS - start))
writes=$(($(metric "$NODE2" syncd_cache_writes_total) - before))
received=$(($(metric "$NODE2" syncd_events_received_total) - received))
echo "test_writebehind: 60 updates in ${elapsed} s: node 2 received $received events, wrote $writes cache records"
[ "$received" -ge 30 ] || fail "node 2 received only $received of 60 events"
[ "$writes" -le $((elapsed + 2)) ] ||
    fail "node 2 wrote $writes cache records for 60 updates in ${elapsed} s"

stop_node2 TERM
"$CLUSTER" start-node 2 >/dev/null || fail "node 2 did not start again"
[ "$(served "$NODE2")" = '61 {"n":60}' ] ||
    fail "after a clean restart node 2 serves '$(served "$NODE2")'"
hits=$(metric "$NODE2" syncd_cache_hits_total)
[ "${hits:-0}" -ge 1 ] || fail "node 2 did not serve from its kept cache"
echo "test_writebehind: clean restart: node 2 serves v61 from its kept cache (${SECONDS} s)"

put_n 61 80
wait_served "$NODE2" '81 {"n":80}'
stop_node2 KILL
put_n 81 90
"$CLUSTER" start-node 2 >/dev/null || fail "node 2 did not start again"
[ "$(served "$NODE2")" = '91 {"n":90}' ] ||
    fail "after kill -9 node 2 serves '$(served "$NODE2")', want v91"
echo "test_writebehind: after kill -9 node 2 serves the committed v91 (${SECONDS} s)"
