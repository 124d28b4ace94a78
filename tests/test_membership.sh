#!/usr/bin/env bash
# test_membership.sh - node membership of a real three-node cluster
# (scripts/cluster.sh: FerretDB, Redis, three syncd) with
# --heartbeat-interval 1s, checked over HTTP and syncctl only:
#
# - every node's GET /v1/nodes (and `syncctl nodes`) lists all three nodes
#   with their advertised URLs, and /metrics says syncd_nodes_live 3;
#   `syncctl nodes` fails with one line and exit 1 against a server that
#   is no syncd, and with exit 2 given an argument;
# - after 20 writes to a collection have settled, every node reports every
#   node at that collection's newest seq (20) with lag 0;
# - node 2 killed with SIGKILL is absent from /v1/nodes of nodes 1 and 3,
#   and they log "node node-2 gone (last heartbeat ...)", within three
#   heartbeat intervals plus 1 s; syncd_nodes_live then reads 2;
# - a second syncd on node 1's data dir exits 1 naming the dir and node 1's
#   pid;
# - node 2 started again is listed again (and logged as joined) by the
#   others, and syncd_nodes_live reads 3.
#
# Usage: tests/test_membership.sh SYNCD SYNCCTL
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SYNCD_BIN="${1:?usage: test_membership.sh SYNCD SYNCCTL}"
SYNCCTL="${2:?usage: test_membership.sh SYNCD SYNCCTL}"
TMP="$(mktemp -d /tmp/syncd-test-membership-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--heartbeat-interval 1s --anti-entropy-interval 1s --log-level info"
CLUSTER="$ROOT/scripts/cluster.sh"
INTERVAL_MS=1000
WRITES=20

cleanup() {
    "$CLUSTER" stop || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    local f
    echo "test_membership: FAIL: $*" >&2
    for f in "$SYNCD_CLUSTER_DIR"/node*/syncd.log; do
        echo "--- $f" >&2
        tail -n 20 "$f" >&2 || true
    done
    exit 1
}

now_ms() { date +%s%3N; }

# nodes URL: the /v1/nodes answer of the node at URL, or "{}".
nodes() { curl -sf --max-time 2 "$1/v1/nodes" || echo '{}'; }

# ids URL: the ids /v1/nodes of URL lists, space-separated, with their URLs
# (id=url).
ids() {
    nodes "$1" | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(" ".join("%s=%s" % (n["id"], n["url"]) for n in v.get("nodes", [])))'
}

# live URL: the syncd_nodes_live value of URL's /metrics.
live() {
    curl -sf --max-time 2 "$1/metrics" | awk '$1 == "syncd_nodes_live" { print $2 }'
}

# until_true MS CMD...: runs CMD every 100 ms until it succeeds (0) or MS
# milliseconds have passed (1).
until_true() {
    local deadline=$(($(now_ms) + $1))
    shift
    while :; do
        if "$@"; then return 0; fi
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

"$CLUSTER" start >/dev/null
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES=("$NODE1" "$NODE2" "$NODE3")
ALL="node-1=$NODE1 node-2=$NODE2 node-3=$NODE3"
WITHOUT2="node-1=$NODE1 node-3=$NODE3"

lists() { [ "$(ids "$1")" = "$2" ]; }
live_is() { [ "$(live "$1")" = "$2" ]; }

# 1. Every node sees all three, with their advertised URLs.
for n in "${NODES[@]}"; do
    until_true 5000 lists "$n" "$ALL" || fail "$n lists '$(ids "$n")', want '$ALL'"
    until_true 3000 live_is "$n" 3 || fail "$n: syncd_nodes_live $(live "$n"), want 3"
done
out=$("$SYNCCTL" --server "$NODE2" nodes) || fail "syncctl nodes exited $?"
[ "$(echo "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["self"], len(v["nodes"]))')" = "node-2 3" ] ||
    fail "syncctl nodes printed $out"
set +e
err=$("$SYNCCTL" --server "http://127.0.0.1:$REDIS_PORT" nodes 2>&1 >/dev/null)
rc=$?
"$SYNCCTL" --server "$NODE1" nodes extra >/dev/null 2>&1
usage=$?
set -e
[ "$rc" = 1 ] && [ "$(echo "$err" | wc -l)" = 1 ] ||
    fail "syncctl nodes against a non-syncd server exited $rc with: $err"
[ "$usage" = 2 ] || fail "syncctl nodes with an extra argument exited $usage, want 2"

# 2. Lag: after WRITES writes settle, every node is at the newest seq.
for i in $(seq "$WRITES"); do
    node="${NODES[$((i % 3))]}"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d "{\"i\":$i}" \
        "$node/v1/collections/lag/docs/d$i")
    [ "$code" = 201 ] || fail "write $i to $node answered $code"
done
settled() {
    nodes "$1" | python3 -c '
import json, sys
v = json.load(sys.stdin)
want = int(sys.argv[1])
ok = len(v.get("nodes", [])) == 3 and all(
    n["collections"].get("lag") == {"seq": want, "newest": want, "lag": 0}
    for n in v["nodes"])
sys.exit(0 if ok else 1)' "$WRITES"
}
for n in "${NODES[@]}"; do
    until_true 15000 settled "$n" || fail "$n: lags did not settle at seq $WRITES: $(nodes "$n")"
done
curl -sf "$NODE1/metrics" | grep -qx 'syncd_node_lag{node="node-3",collection="lag"} 0' ||
    fail "node 1 /metrics has no zero lag of node-3 in collection lag"

# 3. Node 2 killed: gone from the others within three intervals + 1 s.
# (It lapses three intervals after its last heartbeat, which came at most
# one interval before the kill; the others read the live nodes every
# quarter interval.) The check is cheap so that it can poll often.
"$CLUSTER" kill-node 2
killed=$(now_ms)
bound=$((3 * INTERVAL_MS + 1000))
gone_everywhere() {
    local k url
    for k in 1 3; do
        url="NODE$k"
        case "$(nodes "${!url}")" in
        *'"id":"node-2"'* | '{}') return 1 ;;
        esac
        grep -q 'node node-2 gone (last heartbeat 20' \
            "$SYNCD_CLUSTER_DIR/node$k/syncd.log" || return 1
    done
}
until_true $((killed + bound - $(now_ms))) gone_everywhere ||
    fail "node 2 not gone from /v1/nodes and the logs of nodes 1 and 3 $bound ms after SIGKILL"
echo "test_membership: node 2 reported gone $(($(now_ms) - killed)) ms after SIGKILL"
for n in "$NODE1" "$NODE3"; do
    lists "$n" "$WITHOUT2" || fail "$n lists '$(ids "$n")' after node 2 was killed"
done
until_true 2000 live_is "$NODE1" 2 || fail "node 1: syncd_nodes_live $(live "$NODE1") after the kill, want 2"

# 4. One syncd per data dir.
set +e
out=$("$SYNCD_BIN" --listen 127.0.0.1:0 --data-dir "$SYNCD_CLUSTER_DIR/node1/data" \
    --mongo-uri "$MONGO_URI" --redis-url "$REDIS_URL" 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a second syncd on node 1's data dir exited $rc: $out"
case "$out" in
*"$SYNCD_CLUSTER_DIR/node1/data"*"pid $(cat "$SYNCD_CLUSTER_DIR/node1/pid")"*) ;;
*) fail "the second syncd did not name the dir and pid: $out" ;;
esac

# 5. Node 2 back: listed and logged as joined again.
"$CLUSTER" start-node 2
for n in "$NODE1" "$NODE3"; do
    until_true 5000 lists "$n" "$ALL" || fail "$n lists '$(ids "$n")' after node 2 restarted"
done
joined_again() {
    [ "$(grep -c 'node node-2 joined' "$SYNCD_CLUSTER_DIR/node1/syncd.log")" -ge 2 ]
}
until_true 3000 joined_again || fail "node 1 did not log node-2 joining again"
until_true 3000 live_is "$NODE1" 3 || fail "node 1: syncd_nodes_live $(live "$NODE1") after the restart, want 3"
echo "test_membership: PASS"
