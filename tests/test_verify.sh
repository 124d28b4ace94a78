#!/usr/bin/env bash
# test_verify.sh - `syncctl verify` against a real cluster (FerretDB, Redis
# and three syncd nodes from scripts/cluster.sh) and the embedded default.
#
# The nodes run with --keep-cache (a clean restart keeps the cache) and an
# anti-entropy interval of an hour, so that what the test changes in a
# cache stays there. 240 documents are written through the three nodes and
# 24 of them updated; `syncctl verify c --nodes N1,N2,N3` must then exit 0
# with every node agreeing. Node 2 is stopped cleanly, tests/cache_tamper
# rewrites in its cache one document's body (keeping its version and hash)
# and another's version (keeping its body and hash), and node 2 starts
# again on the same cache: `syncctl verify` must exit 1 naming exactly those
# two ids on node 2 (reasons body and version, with the versions each side
# holds) and nothing on nodes 1 and 3, and narrow doc-17's difference down
# to the member the tamper added ("/tampered"). A volume collection of 2,000
# volumes (collection big) is tampered on node 2 in one place
# (/volumes/vol-0777/size): `syncctl verify big` must name that path alone,
# found through the hash listings of GET .../hashes (doc/HASH.md
# "Narrowing"), not by shipping the document; node 2 restarts there with
# --verify-at-start off, so that its check at start leaves the cache alone.
# Then the check at start (DESIGN.md section 6, README "State verified at
# start"): node 2 stopped cleanly writes its cache's digests, and started
# with the default check it rehashes every body of its kept cache, finds
# doc-17's, logs it, drops the cache and serves the store's bodies: doc-17
# without the tampered member, doc-42 at the store's version, and `syncctl
# verify` agrees again. Stopped cleanly once more, a version changed in its
# cache (body and hash intact) is caught by --verify-at-start digests alone
# (the digest differs from the clean shutdown's): dropped again, agreeing.
# Last, one embedded syncd (no Mongo, no Redis) with a few documents:
# `syncctl verify c` against it exits 0.
#
# Usage: tests/test_verify.sh SYNCD SYNCCTL CACHE_TAMPER
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SYNCD_BIN="${1:?usage: test_verify.sh SYNCD SYNCCTL CACHE_TAMPER}"
SYNCCTL="${2:?usage: test_verify.sh SYNCD SYNCCTL CACHE_TAMPER}"
TAMPER="${3:?usage: test_verify.sh SYNCD SYNCCTL CACHE_TAMPER}"
TMP="$(mktemp -d /tmp/syncd-test-verify-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--anti-entropy-interval 1h --keep-cache true"
CLUSTER="$ROOT/scripts/cluster.sh"
EMBEDDED_PID=""

cleanup() {
    if [ -n "$EMBEDDED_PID" ]; then
        kill "$EMBEDDED_PID" 2>/dev/null || true
        wait "$EMBEDDED_PID" 2>/dev/null || true
    fi
    "$CLUSTER" stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_verify: FAIL: $*" >&2
    for n in 1 2 3; do
        echo "--- node $n log (tail)" >&2
        tail -n 20 "$SYNCD_CLUSTER_DIR/node$n/syncd.log" >&2 || true
    done
    exit 1
}

# check_report FILE NODE2_IDS: the verify output in FILE must name exactly
# the ids NODE2_IDS (a JSON object id -> [reason, node_v, store_v]) on the
# node at $NODE2 and nothing on the others.
check_report() {
    python3 - "$1" "$2" "$NODE1" "$NODE2" "$NODE3" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
want2 = json.loads(sys.argv[2])
urls = sys.argv[3:6]
nodes = {n["url"]: n for n in report["nodes"]}
assert sorted(nodes) == sorted(urls), "nodes reported: %s" % sorted(nodes)
for url in urls:
    n = nodes[url]
    assert "error" not in n, "%s: %s" % (url, n.get("error"))
    want = want2 if url == urls[1] else {}
    got = {d["id"]: [d["reason"], d["node_v"], d["store_v"]] for d in n["differs"]}
    assert got == want, "%s differs %s, want %s" % (url, got, want)
    assert n["agree"] == (not want), "%s agree is %s" % (url, n["agree"])
    assert n["store_count"] == 240, "%s store_count %s" % (url, n["store_count"])
assert report["agree"] == (not want2), "agree is %s" % report["agree"]
EOF
}

"$CLUSTER" start >/dev/null || fail "the cluster did not start"
echo "test_verify: cluster started (${SECONDS} s)"
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES="$NODE1,$NODE2,$NODE3"

# 240 creates, then 24 updates, spread over the nodes: one writer per node.
write_through() {
    local k="$1" url="$2" i
    for i in $(seq "$k" 3 240); do
        curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' \
            -d "{\"n\":$i,\"name\":\"doc $i\"}" \
            "$url/v1/collections/c/docs/doc-$i" || return 1
    done
    for i in $(seq "$k" 30 240); do
        curl -sf -o /dev/null -X PATCH \
            -H 'Content-Type: application/merge-patch+json' \
            -d '{"updated":true}' "$url/v1/collections/c/docs/doc-$i" ||
            return 1
    done
}
write_through 1 "$NODE1" & w1=$!
write_through 2 "$NODE2" & w2=$!
write_through 3 "$NODE3" & w3=$!
for w in $w1 $w2 $w3; do wait "$w" || fail "a writer failed"; done
python3 - >"$TMP/vols.json" <<'EOF'
import json
vols = {"vol-%04d" % i: {"path": "v/%d" % i, "digest": "sha256:%064x" % i,
                         "size": 1000 + i, "files": i % 7,
                         "updated": "2026-11-24T10:00:00Z"} for i in range(2000)}
print(json.dumps({"kind": "VolumeCollection", "name": "refs", "volumes": vols}))
EOF
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' \
    --data-binary @"$TMP/vols.json" "$NODE1/v1/collections/big/docs/vols" ||
    fail "PUT big/vols"
echo "test_verify: 240 documents and a 2,000-volume document written (${SECONDS} s)"

# Every node applies the events of the others: wait (bounded) until they
# all agree.
ok=0
for _ in $(seq 100); do
    if "$SYNCCTL" verify c --nodes "$NODES" >"$TMP/agree.json" 2>"$TMP/agree.err"; then
        ok=1
        break
    fi
    sleep 0.2
done
[ "$ok" = 1 ] || fail "verify did not exit 0: $(cat "$TMP/agree.json" "$TMP/agree.err")"
check_report "$TMP/agree.json" '{}' || fail "verify of agreeing nodes"
ok=0
for _ in $(seq 100); do
    if "$SYNCCTL" verify big --nodes "$NODES" >"$TMP/agree-big.json" 2>&1; then
        ok=1
        break
    fi
    sleep 0.2
done
[ "$ok" = 1 ] || fail "verify big did not exit 0: $(cat "$TMP/agree-big.json")"
# The listing route: the top of /volumes (2,000 members: chunked), a path
# that names nothing (404), a bad level or source (400).
H="$NODE2/v1/collections/big/docs/vols/hashes"
curl -sf "$H?path=/volumes&source=store" >"$TMP/top.json" ||
    fail "GET hashes of /volumes"
python3 - "$TMP/top.json" <<'EOF' || fail "hashes of /volumes: $(cat "$TMP/top.json")"
import json, sys
t = json.load(open(sys.argv[1]))
assert t["type"] == "o" and t["size"] == 2000 and t["levels"] >= 2, t
assert t["level"] == t["levels"] - 1 and t["v"] == 1 and t["source"] == "store", t
assert sum(1 for _ in t["items"]) <= 64 and t["items"][-1][2] == 2000, t
EOF
[ "$(curl -s -o /dev/null -w '%{http_code}' "$H?path=/nope")" = 404 ] ||
    fail "hashes of a missing path is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$H?level=x")" = 400 ] ||
    fail "hashes with a bad level is not 400"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$H?source=x")" = 400 ] ||
    fail "hashes with a bad source is not 400"
# A node lists a document it patched from an event from the hash tree its
# cache keeps beside the body: one volume changed through node 1, node 2's
# listings of its copy (source=node) must be the store's, level by level.
# A watch on node 2 (live once it replayed the create) holds the collection
# there, and shows when node 2 has applied the change.
curl -sN "$NODE2/v1/collections/big/watch?since=0" >"$TMP/bigwatch.txt" &
watch_pid=$!
wait_line() {
    local i
    for i in $(seq 300); do
        grep -q "$1" "$TMP/bigwatch.txt" && return 0
        sleep 0.1
    done
    return 1
}
wait_line '"v":1' || fail "node 2's watch of big saw no create: $(cat "$TMP/bigwatch.txt")"
curl -sf -o /dev/null -X PATCH -H 'Content-Type: application/json-patch+json' \
    -d '[{"op":"replace","path":"/volumes/vol-0123/size","value":5}]' \
    "$NODE1/v1/collections/big/docs/vols" || fail "PATCH big/vols"
wait_line '"v":2' || fail "node 2 did not apply big/vols v2"
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
for q in "path=/volumes" "path=/volumes&level=0&from=100&count=50" \
    "path=/volumes/vol-0123" "path="; do
    curl -sf "$H?$q&source=node" >"$TMP/hn.json" &&
        curl -sf "$H?$q&source=store" >"$TMP/hs.json" ||
        fail "GET hashes?$q"
    python3 - "$TMP/hn.json" "$TMP/hs.json" <<'EOF' ||
import json, sys
n, s = (json.load(open(f)) for f in sys.argv[1:])
assert n.pop("source") == "node" and s.pop("source") == "store", (n, s)
assert n["v"] == 2 and n == s, (n, s)
EOF
        fail "node 2's listing ($q) is not the store's: $(cat "$TMP/hn.json" "$TMP/hs.json")"
done
echo "test_verify: three agreeing nodes: exit 0 (${SECONDS} s)"

# Stop node 2 cleanly (its cache is kept), tamper with it, start it again.
kill -TERM "$(cat "$SYNCD_CLUSTER_DIR/node2/pid")"
for _ in $(seq 100); do
    kill -0 "$(cat "$SYNCD_CLUSTER_DIR/node2/pid")" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$(cat "$SYNCD_CLUSTER_DIR/node2/pid")" 2>/dev/null &&
    fail "node 2 did not stop on SIGTERM"
"$TAMPER" "$SYNCD_CLUSTER_DIR/node2/data" c doc-17 body ||
    fail "cache_tamper body"
"$TAMPER" "$SYNCD_CLUSTER_DIR/node2/data" c doc-42 version 7 ||
    fail "cache_tamper version"
"$TAMPER" "$SYNCD_CLUSTER_DIR/node2/data" big vols set /volumes/vol-0777/size 7 ||
    fail "cache_tamper set"
SYNCD_VERIFY_AT_START=off "$CLUSTER" start-node 2 >/dev/null ||
    fail "node 2 did not start again"

set +e
"$SYNCCTL" verify c --nodes "$NODES" >"$TMP/tampered.json" 2>"$TMP/tampered.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "verify of a tampered node exited $rc, want 1: $(cat "$TMP/tampered.json" "$TMP/tampered.err")"
check_report "$TMP/tampered.json" \
    '{"doc-17": ["body", 1, 1], "doc-42": ["version", 7, 1]}' ||
    fail "verify of a tampered node: $(cat "$TMP/tampered.json")"
python3 - "$TMP/tampered.json" "$NODE2" <<'EOF' ||
import json, sys
report = json.load(open(sys.argv[1]))
node2 = [n for n in report["nodes"] if n["url"] == sys.argv[2]][0]
d = {x["id"]: x for x in node2["differs"]}
assert d["doc-17"]["paths"] == ["/tampered"], d["doc-17"]
assert d["doc-17"]["paths_truncated"] is False, d["doc-17"]
assert "paths" not in d["doc-42"], d["doc-42"]
EOF
    fail "verify did not narrow doc-17 to /tampered: $(cat "$TMP/tampered.json")"
echo "test_verify: tampered node 2: exit 1 naming doc-17 (body, at /tampered) and doc-42 (version) (${SECONDS} s)"

set +e
"$SYNCCTL" verify big --nodes "$NODES" >"$TMP/big.json" 2>"$TMP/big.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "verify big exited $rc, want 1: $(cat "$TMP/big.json" "$TMP/big.err")"
python3 - "$TMP/big.json" "$NODE1" "$NODE2" "$NODE3" <<'EOF' ||
import json, sys
report = json.load(open(sys.argv[1]))
nodes = {n["url"]: n for n in report["nodes"]}
for url in sys.argv[2:]:
    want = [{"id": "vols", "node_v": 2, "store_v": 2, "reason": "body",
             "paths": ["/volumes/vol-0777/size"], "paths_truncated": False}
            ] if url == sys.argv[3] else []
    assert nodes[url]["differs"] == want, (url, nodes[url]["differs"])
EOF
    fail "verify big did not name /volumes/vol-0777/size: $(cat "$TMP/big.json")"
echo "test_verify: a 2,000-volume document tampered in one place: narrowed to /volumes/vol-0777/size (${SECONDS} s)"

# stop_node2: SIGTERM to node 2, waiting (bounded) until it is gone.
stop_node2() {
    local pid
    pid="$(cat "$SYNCD_CLUSTER_DIR/node2/pid")"
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    fail "node 2 did not stop on SIGTERM"
}

# agree_again WHAT: syncctl verify of the three nodes exits 0 naming nothing.
agree_again() {
    "$SYNCCTL" verify c --nodes "$NODES" >"$TMP/again.json" 2>"$TMP/again.err" ||
        fail "$1: verify did not exit 0: $(cat "$TMP/again.json" "$TMP/again.err")"
    check_report "$TMP/again.json" '{}' || fail "$1: verify"
}

# The check at start: a clean stop writes the cache's digests; the default
# start rehashes the kept cache, finds doc-17 and drops the cache.
LOG2="$SYNCD_CLUSTER_DIR/node2/syncd.log"
stop_node2
python3 - "$SYNCD_CLUSTER_DIR/node2/data/store/digests.json" <<'EOF2' ||
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == 1 and d["kind"] == "cache", d
assert d["written"].endswith("Z"), d
assert d["collections"]["c"]["count"] > 0, d
EOF2
    fail "node 2's digests file after a clean stop"
lines=$(wc -l <"$LOG2")
"$CLUSTER" start-node 2 >/dev/null || fail "node 2 did not start (check)"
tail -n "+$((lines + 1))" "$LOG2" >"$TMP/start2.log"
grep -q "collection c: a stored body does not match its hash: doc-17$" "$TMP/start2.log" ||
    fail "node 2's start did not name doc-17: $(cat "$TMP/start2.log")"
grep -q "kept cache failed the check; dropped it" "$TMP/start2.log" ||
    fail "node 2 did not drop its cache: $(cat "$TMP/start2.log")"
[ ! -e "$SYNCD_CLUSTER_DIR/node2/data/store/digests.json" ] ||
    fail "node 2 left its digests file while running"
curl -sf "$NODE2/v1/collections/c/docs/doc-17" >"$TMP/doc17.json" ||
    fail "GET doc-17 from node 2"
curl -sf "$NODE1/v1/collections/c/docs/doc-17" >"$TMP/doc17-store.json" ||
    fail "GET doc-17 from node 1"
cmp -s "$TMP/doc17.json" "$TMP/doc17-store.json" && ! grep -q tampered "$TMP/doc17.json" ||
    fail "node 2 serves doc-17 as $(cat "$TMP/doc17.json"), the store $(cat "$TMP/doc17-store.json")"
[ "$(curl -sf -o /dev/null -w '%header{etag}' "$NODE2/v1/collections/c/docs/doc-42")" = '"1"' ] ||
    fail "node 2 does not serve doc-42 at version 1"
agree_again "after the dropped cache"
echo "test_verify: node 2 restarted: its check found doc-17, dropped the cache, serves the store's bodies (${SECONDS} s)"

# A version changed while stopped: --verify-at-start digests catches it by
# the digest alone.
stop_node2
"$TAMPER" "$SYNCD_CLUSTER_DIR/node2/data" c doc-42 version 9 ||
    fail "cache_tamper version 9"
lines=$(wc -l <"$LOG2")
SYNCD_VERIFY_AT_START=digests "$CLUSTER" start-node 2 >/dev/null ||
    fail "node 2 did not start (digests)"
tail -n "+$((lines + 1))" "$LOG2" >"$TMP/start3.log"
grep -q "collection c changed since the clean shutdown" "$TMP/start3.log" &&
    grep -q "kept cache failed the check; dropped it" "$TMP/start3.log" &&
    grep -q "(digests, " "$TMP/start3.log" ||
    fail "node 2's digests check: $(cat "$TMP/start3.log")"
[ "$(curl -sf -o /dev/null -w '%header{etag}' "$NODE2/v1/collections/c/docs/doc-42")" = '"1"' ] ||
    fail "node 2 does not serve doc-42 at version 1 after the digests check"
agree_again "after the digests check"
echo "test_verify: a version changed while stopped: the digests check dropped the cache (${SECONDS} s)"

# A node that cannot be reached is named, exit 1.
set +e
"$SYNCCTL" verify c --nodes "$NODE1,http://127.0.0.1:9" >"$TMP/down.json" 2>"$TMP/down.err"
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "127.0.0.1:9" "$TMP/down.err" ||
    fail "verify with an unreachable node exited $rc: $(cat "$TMP/down.err")"
echo "test_verify: unreachable node: exit 1, named (${SECONDS} s)"

# The embedded default: one node, its own store.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SYNCD_BIN" --listen "127.0.0.1:$PORT" --data-dir "$TMP/embedded" \
    >"$TMP/embedded.log" 2>&1 &
EMBEDDED_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/health" && break
    sleep 0.1
done
for i in $(seq 1 20); do
    curl -sf -o /dev/null -X PUT -d "{\"n\":$i}" \
        "http://127.0.0.1:$PORT/v1/collections/c/docs/e-$i" || fail "embedded PUT"
done
"$SYNCCTL" --server "http://127.0.0.1:$PORT" verify c >"$TMP/embedded.json" ||
    fail "verify of the embedded default: $(cat "$TMP/embedded.json")"
echo "test_verify: embedded default: exit 0 (${SECONDS} s)"
echo "test_verify: PASS (${SECONDS} s)"
