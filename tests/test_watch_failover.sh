#!/usr/bin/env bash
# test_watch_failover.sh - `syncctl watch` across node failures and a Redis
# that lost its data, on the three-node cluster of scripts/cluster.sh
# (FerretDB, Redis), driven over HTTP and syncctl only (DESIGN.md sections
# 4, 5 and 10).
#
# Part 1, reconnects: while two clients write, watcher A (`--server NODE2
# --nodes NODE3`) loses node 2 for good (SIGKILL) and fails over to node 3;
# watcher B (`--server NODE1`) loses node 1, which is started again 3 s
# later, and reconnects to it. Neither exits; each printed stream holds,
# for every document, each version the store committed exactly once, in
# order, with seqs 1, 2, 3, ... (tests/stream_check.c against FerretDB).
#
# Part 2, Redis restarted without its data while the clients write: the
# bus's seqs start a new epoch. Each watcher is told (`event: resync`, or a
# 410 when it reconnects) and exits 1 saying so; what it printed before
# holds no version twice and no seq out of order; a watch resumed from its
# last seq (the old epoch) is answered 410; a watch from the seq a listing
# gives now streams the new epoch's versions once, seqs without a gap.
#
# Usage: tests/test_watch_failover.sh SYNCD SYNCCTL STREAM_CHECK
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USAGE="usage: test_watch_failover.sh SYNCD SYNCCTL STREAM_CHECK"
export SYNCD_BIN="${1:?$USAGE}"
SYNCCTL="${2:?$USAGE}"
CHECK="${3:?$USAGE}"
TMP="$(mktemp -d /tmp/syncd-test-watch-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--anti-entropy-interval 2s --max-retries 100 --log-level info"
CLUSTER="$ROOT/scripts/cluster.sh"
KEYS=60 # adds per client and part
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$CLUSTER" stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    local f
    echo "test_watch_failover: FAIL: $*" >&2
    for f in "$TMP"/w*.err "$SYNCD_CLUSTER_DIR"/node*/syncd.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}

"$CLUSTER" start >/dev/null
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"

for d in d1 d2; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"items":{}}' \
        "$NODE3/v1/collections/c/docs/$d")
    [ "$code" = 201 ] || fail "create of $d answered $code"
done

# client NAME NODE DOC: KEYS adds of distinct keys to DOC through NODE, each
# retried until it is 200.
client() {
    local k code
    for k in $(seq "$KEYS"); do
        for _ in $(seq 600); do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
                -X PATCH -H 'Content-Type: application/json-patch+json' \
                -d "[{\"op\":\"add\",\"path\":\"/items/$1-$k\",\"value\":$k}]" \
                "$2/v1/collections/c/docs/$3" || true)
            [ "$code" = 200 ] && break
            sleep 0.1
        done
        [ "$code" = 200 ] || { echo "client $1: key $k answered $code" >&2; exit 1; }
    done
}

# watch NAME ARGS...: syncctl ARGS into $TMP/NAME (stderr NAME.err) in the
# background; its pid in the variable NAME_PID.
watch() {
    local name="$1"
    shift
    "$SYNCCTL" "$@" >"$TMP/$name" 2>"$TMP/$name.err" &
    PIDS+=($!)
    printf -v "${name}_PID" %s $!
}

# bus_seq: the collection's seq as node 3 lists it.
bus_seq() {
    curl -s --max-time 5 "$NODE3/v1/collections/c/docs?limit=1" |
        grep -o '"seq":[0-9]*' | head -n 1 | cut -d: -f2
}

# wait_reached SEQ STREAM...: waits (up to 60 s) until every stream printed
# seq SEQ.
wait_reached() {
    local seq="$1"
    shift
    for _ in $(seq 600); do
        "$CHECK" reached "$seq" "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---- Part 1: a node killed for good, a node restarted ----------------------

watch wa --server "$NODE2" watch c --since 0 --nodes "$NODE3"
watch wb --server "$NODE1" watch c --since 0
client p1 "$NODE3" d1 &
C1=$!
client q1 "$NODE3" d2 &
C2=$!
sleep 2
"$CLUSTER" kill-node 2
sleep 1
"$CLUSTER" kill-node 1
sleep 3
"$CLUSTER" start-node 1 >/dev/null
wait "$C1" || fail "a client gave up"
wait "$C2" || fail "a client gave up"
SEQ=$(bus_seq)
wait_reached "$SEQ" "$TMP/wa" "$TMP/wb" ||
    fail "the watchers did not reach seq $SEQ (wa at $("$CHECK" last "$TMP/wa"), wb at $("$CHECK" last "$TMP/wb"))"
kill -0 "$wa_PID" 2>/dev/null || fail "watcher A exited after its node was killed"
kill -0 "$wb_PID" 2>/dev/null || fail "watcher B exited after its node was restarted"
grep -q "trying $NODE3" "$TMP/wa.err" || fail "watcher A did not fail over to node 3"
"$CHECK" check "$MONGO_URI" syncd c "$TMP/wa" "$TMP/wb" ||
    fail "part 1: the watchers' streams break the every-version contract (above)"
echo "test_watch_failover: part 1 OK (both watchers printed seqs 1..$SEQ, every version once)"

# ---- Part 2: Redis restarted without its data ------------------------------

"$CLUSTER" start-node 2 >/dev/null
client p2 "$NODE1" d1 &
C1=$!
client q2 "$NODE3" d2 &
C2=$!
sleep 1
"$CLUSTER" restart-redis
wait "$C1" || fail "a client gave up after the Redis restart"
wait "$C2" || fail "a client gave up after the Redis restart"
for w in wa wb; do
    pid="${w}_PID"
    for _ in $(seq 300); do kill -0 "${!pid}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${!pid}" 2>/dev/null && fail "watcher $w still runs after Redis lost its data"
    rc=0
    wait "${!pid}" || rc=$?
    [ "$rc" = 1 ] || fail "watcher $w exited with $rc, not 1"
    grep -q 'resync needed\|410 gone' "$TMP/$w.err" ||
        fail "watcher $w did not say why it stopped"
done
# What they printed: no version twice, seqs in order without a gap.
python3 - "$TMP/wa" "$TMP/wb" <<'EOF' || fail "part 2: a stream repeats a version or skips a seq"
import json, sys
for f in sys.argv[1:]:
    seen, last = set(), 0
    for line in open(f):
        e = json.loads(line)
        key = (e["id"], e["v"])
        assert key not in seen, f"{f}: {key} twice (seq {e['seq']})"
        assert e["seq"] == last + 1, f"{f}: seq {e['seq']} after {last}"
        seen.add(key)
        last = e["seq"]
EOF
# Resuming from the old epoch is refused; a fresh listing's seq works.
LAST=$("$CHECK" last "$TMP/wa")
rc=0
timeout 30 "$SYNCCTL" --server "$NODE1" watch c --since "$LAST" >"$TMP/wr" 2>"$TMP/wr.err" || rc=$?
[ "$rc" = 1 ] && grep -q '410 gone' "$TMP/wr.err" ||
    fail "a watch resumed from seq $LAST of the old epoch: status $rc, $(cat "$TMP/wr.err")"
[ -s "$TMP/wr" ] && fail "a watch resumed from the old epoch printed events"
NOW=$(bus_seq)
watch wn --server "$NODE2" watch c --since "$NOW"
sleep 1
KEYS=20
client p3 "$NODE1" d1
client q3 "$NODE2" d2
SEQ=$(bus_seq)
wait_reached "$SEQ" "$TMP/wn" || fail "the new watcher did not reach seq $SEQ"
python3 - "$TMP/wn" "$NOW" "$SEQ" <<'EOF' || fail "part 2: the new epoch's stream is wrong"
import json, sys
f, last, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = set()
for line in open(f):
    e = json.loads(line)
    key = (e["id"], e["v"])
    assert key not in seen, f"{key} twice (seq {e['seq']})"
    assert e["seq"] == last + 1, f"seq {e['seq']} after {last}"
    seen.add(key)
    last = e["seq"]
assert last == end, f"the stream ends at {last}, not {end}"
assert len(seen) == 40, f"{len(seen)} versions, not the 40 written"
EOF
echo "test_watch_failover: OK (failover and reconnect without a gap or a repeat; after Redis lost its data every watcher was told, the old epoch's seq got 410, the new epoch streams once)"
