#!/usr/bin/env bash
# test_history.sh - history and rollback end to end through syncctl and the
# HTTP routes, against a real syncd: the embedded default, or with "mongo"
# a node on FerretDB and Redis (MongoDB mode, where the node cache holds no
# history and the reads go to the store).
#
# A document gets five versions (create, two updates, a delete, a
# re-create); `syncctl history` lists them newest first with their origin,
# and the forward patch of each, applied to its body, gives the next
# version's; `syncctl get --version N` returns each body (ETag "N" on the
# route), and a version the history no longer keeps (--history-len 4) is
# a 404 naming the oldest kept one. `syncctl rollback` writes an old body as
# a new version: the watch stream shows it as an ordinary update (the hash
# of the version restored), and a rollback over a tombstone as a create. A strict rollback at
# another version is 412 and writes nothing, a repeated Idempotency-Key
# replays, and a rollback to a deletion or to a version not kept is 404.
#
# Usage: tests/test_history.sh SYNCD SYNCCTL [mongo]
set -euo pipefail

SYNCD_BIN="${1:?usage: test_history.sh SYNCD SYNCCTL [mongo]}"
SYNCCTL="${2:?usage: test_history.sh SYNCD SYNCCTL [mongo]}"
MODE="${3:-embedded}"
ROOT="$(pwd)"
FERRETDB="${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}"
TMP="$(mktemp -d /tmp/syncd-test-history-XXXXXX)"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_history ($MODE): FAIL: $*" >&2
    tail -n 20 "$TMP/syncd.log" >&2 || true
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for N CMD...: runs CMD every 0.1 s, at most N times, until it works.
wait_for() {
    local n="$1"
    shift
    for _ in $(seq "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

ARGS=()
if [ "$MODE" = mongo ]; then
    RP=$(free_port)
    mkdir -p "$TMP/redis"
    redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$TMP/redis/pid" --logfile "$TMP/redis/log" \
        --dir "$TMP/redis"
    wait_for 100 redis-cli -p "$RP" ping || fail "redis did not start"
    PIDS+=("$(cat "$TMP/redis/pid")")
    MP=$(free_port)
    mkdir -p "$TMP/fdb" "$TMP/fdb-state"
    "$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
        --listen-addr="127.0.0.1:$MP" --state-dir="$TMP/fdb-state" \
        --telemetry=disable --log-level=warn >"$TMP/ferretdb.log" 2>&1 &
    PIDS+=("$!")
    wait_for 200 python3 -c "import socket; socket.create_connection(('127.0.0.1', $MP), 1)" ||
        fail "ferretdb did not start"
    ARGS=(--mongo-uri "mongodb://127.0.0.1:$MP/" --redis-url "redis://127.0.0.1:$RP/")
fi

PORT=$(free_port)
SERVER="http://127.0.0.1:$PORT"
"$SYNCD_BIN" --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" \
    --node-id hist-node --history-len 4 "${ARGS[@]}" >"$TMP/syncd.log" 2>&1 &
PIDS+=("$!")
wait_for 300 curl -sf -o /dev/null "$SERVER/v1/health" || fail "syncd did not start"
S() { "$SYNCCTL" --server "$SERVER" "$@"; }
DOC="$SERVER/v1/collections/vols/docs/Scenario%2Fhg38"

# The watch stream of the collection, from its first event on.
curl -sN "$SERVER/v1/collections/vols/watch?since=0" >"$TMP/watch.txt" &
PIDS+=("$!")

echo '{"size":1,"files":["a"]}' | S put vols Scenario/hg38 >/dev/null || fail "put v1"
echo '{"size":2,"files":["a","b"]}' | S put vols Scenario/hg38 >/dev/null || fail "put v2"
echo '{"size":3,"files":["a","b"],"note":"x"}' | S put vols Scenario/hg38 >/dev/null || fail "put v3"
S rm vols Scenario/hg38 >/dev/null || fail "rm (v4)"
echo '{"size":5}' | S put vols Scenario/hg38 >/dev/null || fail "re-create v5"

for v in 2 3 5; do
    S get vols Scenario/hg38 --version "$v" >"$TMP/get$v.json" || fail "get --version $v"
done
S history vols Scenario/hg38 >"$TMP/hist1.json" || fail "history"
python3 - "$TMP" <<'PY' || fail "history and versions"
import json, sys
t = sys.argv[1]
h = json.load(open(t + "/hist1.json"))
assert h["id"] == "Scenario/hg38" and h["v"] == 5 and h["oldest"] == 1, h
vs = h["versions"]
assert [e["v"] for e in vs] == [5, 4, 3, 2, 1], vs
assert all(e["origin"] == "hist-node" and e["time"].endswith("Z") for e in vs), vs
assert [e["deleted"] for e in vs] == [False, True, False, False, False], vs
assert vs[0]["patch"] is None
bodies = {2: json.load(open(t + "/get2.json")), 3: json.load(open(t + "/get3.json")),
          5: json.load(open(t + "/get5.json"))}
assert bodies[2] == {"size": 2, "files": ["a", "b"]}, bodies
assert bodies[3] == {"size": 3, "files": ["a", "b"], "note": "x"}, bodies
assert bodies[5] == {"size": 5}, bodies

def apply(doc, patch):
    # Enough of RFC 6902 for these patches: add, remove, replace.
    doc = json.loads(json.dumps(doc))
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            doc = op.get("value")
            continue
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            i = len(parent) if last == "-" else int(last)
            if op["op"] == "add": parent.insert(i, op["value"])
            elif op["op"] == "remove": del parent[i]
            else: parent[i] = op["value"]
        else:
            if op["op"] == "remove": del parent[last]
            else: parent[last] = op["value"]
    return doc

# The forward patch of v2 gives v3; that of v3 gives the tombstone ({}).
by_v = {e["v"]: e for e in vs}
assert apply(bodies[2], by_v[2]["patch"]) == bodies[3], by_v[2]
assert apply(bodies[3], by_v[3]["patch"]) == {}, by_v[3]
assert apply({}, by_v[4]["patch"]) == bodies[5], by_v[4]
PY

# The route itself: ETag "N" on a version read, 404 naming the oldest kept.
curl -sf -D "$TMP/h3" -o /dev/null "$DOC?version=3" || fail "GET ?version=3"
grep -qi '^etag: "3"' "$TMP/h3" || fail "GET ?version=3 has no ETag \"3\": $(cat "$TMP/h3")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$DOC?version=4")" = 404 ] ||
    fail "GET of a deleted version is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$DOC?version=x")" = 400 ] ||
    fail "GET ?version=x is not 400"

# Rollback to v2: an ordinary update (v6); --history-len 4 then drops v1.
S rollback vols Scenario/hg38 2 >"$TMP/rb6.json" || fail "rollback to 2"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["v"]==6 and d["data"]=={"size":2,"files":["a","b"]}, d' \
    "$TMP/rb6.json" || fail "rollback to 2: $(cat "$TMP/rb6.json")"
set +e
S get vols Scenario/hg38 --version 1 >/dev/null 2>"$TMP/gone.err"
rc=$?
S rollback vols Scenario/hg38 1 >/dev/null 2>"$TMP/rbgone.err"
rc2=$?
S rollback vols Scenario/hg38 4 >/dev/null 2>"$TMP/rbdel.err"
rc3=$?
S rollback vols Scenario/hg38 3 --if-match 5 >/dev/null 2>"$TMP/rb412.err"
rc4=$?
set -e
[ "$rc" = 1 ] && grep -q "404 not_found: .*the oldest kept version is 2" "$TMP/gone.err" ||
    fail "get --version 1 after trimming: exit $rc: $(cat "$TMP/gone.err")"
[ "$rc2" = 1 ] && grep -q "^syncctl: 404 " "$TMP/rbgone.err" || fail "rollback to a trimmed version: $(cat "$TMP/rbgone.err")"
[ "$rc3" = 1 ] && grep -q "404 not_found: .*deletion" "$TMP/rbdel.err" || fail "rollback to a deletion: $(cat "$TMP/rbdel.err")"
[ "$rc4" = 1 ] && grep -q "^syncctl: 412 " "$TMP/rb412.err" || fail "strict rollback: $(cat "$TMP/rb412.err")"

# An Idempotency-Key replays the first outcome and writes nothing.
for _ in 1 2; do
    curl -s -o /dev/null -D "$TMP/idem" -X POST -H 'Idempotency-Key: rb-7' \
        -H 'If-Match: "6"' "$DOC/rollback?to=3"
    grep -qi '^etag: "7"' "$TMP/idem" || fail "rollback with a key: $(cat "$TMP/idem")"
done
[ "$(S history vols Scenario/hg38 | python3 -c 'import json,sys; print(json.load(sys.stdin)["v"])')" = 7 ] ||
    fail "a replayed rollback wrote a version"

# A deleted document comes back from its tombstone: a create.
S rm vols Scenario/hg38 >/dev/null || fail "rm (v8)"
S rollback vols Scenario/hg38 7 >"$TMP/rb9.json" || fail "restore from the tombstone"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["v"]==9 and d["data"]["note"]=="x", d' \
    "$TMP/rb9.json" || fail "restore: $(cat "$TMP/rb9.json")"

# The watch stream saw the rollbacks as ordinary changes.
wait_for 100 grep -q '"v":9' "$TMP/watch.txt" || fail "the watch stream did not reach v9"
python3 - "$TMP/watch.txt" <<'PY' || fail "watch events: $(cat "$TMP/watch.txt")"
import json, sys
events = {}
for line in open(sys.argv[1]):
    if line.startswith("data:"):
        e = json.loads(line[5:])
        events[e["v"]] = e
assert events[6]["op"] == "update" and events[6]["base"] == 5, events[6]
# An update event carries its diff, or the body as a root replace when the
# diff is larger (DESIGN.md section 4): either way it makes v5's body v6's.
assert {"op": "replace", "path": "/size", "value": 2} in events[6]["patch"] or \
    events[6]["patch"] == [{"op": "replace", "path": "",
                            "value": {"size": 2, "files": ["a", "b"]}}], events[6]
assert events[7]["op"] == "update", events[7]
assert events[9]["op"] == "create" and events[9]["base"] == 0, events[9]
assert events[9]["merge"]["note"] == "x", events[9]
assert events[6]["h"] == events[2]["h"] and events[7]["h"] == events[3]["h"], events
PY
echo "test_history ($MODE): ok"
