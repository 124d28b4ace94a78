#!/usr/bin/env bash
# test_hash.sh - `syncctl hash` against a running node and against a second
# implementation of doc/HASH.md.
#
# One embedded syncd (no Mongo, no Redis) stores a few bodies: scalars of
# every type (1 and 1.0, -0.0, a string with escapes and non-ASCII), nested
# members, and a 3,000-member object and a 3,000-element array (chunked).
# For each, the hash the node lists for the document must be what `syncctl
# hash FILE` prints for the body's file, what `syncctl hash -` prints for it
# on stdin, and what tests/tools/merkle_hash.py (written from doc/HASH.md
# alone) prints. One document is then reached by a JSON Patch instead of a
# PUT: its listed hash must be the hash of the final body's file. Last, a
# backup file made before the Merkle hash (legacy hashes) restores, and
# `syncctl restore` finds the node agreeing with it.
#
# Usage: tests/test_hash.sh SYNCD SYNCCTL
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SYNCD="${1:?usage: test_hash.sh SYNCD SYNCCTL}"
SYNCCTL="${2:?usage: test_hash.sh SYNCD SYNCCTL}"
REF="$ROOT/tests/tools/merkle_hash.py"
TMP="$(mktemp -d /tmp/syncd-test-hash-XXXXXX)"
PID=""

cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_hash: FAIL: $*" >&2
    tail -n 20 "$TMP/syncd.log" >&2 || true
    exit 1
}

python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
bodies = {
    "scalars": {"i": 1, "r": 1.0, "z": -0.0, "t": True, "f": False, "n": None,
                "s": "caf\u00e9 \"q\" \\ \t\u0001", "big": 9007199254740993,
                "e": 1e300, "small": 5e-324},
    "nested": {"a": {"b": [1, [2, {"c": []}], {}]}, "": {"~/": "x"}},
    "object": {"vol-%05d" % i: {"size": i, "tags": ["t%d" % (i % 7)]}
               for i in range(3000)},
    "array": {"items": [{"n": i, "x": i * 0.5} for i in range(3000)]},
    "patched": {"a": [1, 2, 3], "b": {"c": "d"}, "e": 2.5},
}
for name, body in bodies.items():
    with open("%s/%s.json" % (d, name), "w") as f:
        json.dump(body, f, ensure_ascii=False)
PY

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
"$SYNCD" --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" >"$TMP/syncd.log" 2>&1 &
PID=$!
for _ in $(seq 200); do
    curl -sf -o /dev/null "$URL/v1/health" && break
    sleep 0.1
done
curl -sf -o /dev/null "$URL/v1/health" || fail "syncd did not start"

for name in scalars nested object array; do
    curl -sf -o /dev/null -X PUT --data-binary "@$TMP/$name.json" \
        "$URL/v1/collections/h/docs/$name" || fail "PUT $name"
done
curl -sf -o /dev/null -X PUT -d '{"a":[1],"b":{"c":"x","gone":true}}' \
    "$URL/v1/collections/h/docs/patched" || fail "PUT patched"
curl -sf -o /dev/null -X PATCH -H 'Content-Type: application/json-patch+json' \
    -d '[{"op":"add","path":"/a/-","value":3},{"op":"add","path":"/a/1","value":2},
         {"op":"replace","path":"/b/c","value":"d"},{"op":"remove","path":"/b/gone"},
         {"op":"add","path":"/e","value":2.5}]' \
    "$URL/v1/collections/h/docs/patched" || fail "PATCH patched"
curl -sf "$URL/v1/collections/h/docs" >"$TMP/list.json" || fail "list"

for name in scalars nested object array patched; do
    listed=$(python3 -c 'import json,sys
l = json.load(open(sys.argv[1]))
docs = l["docs"] if isinstance(l, dict) else l
print([d["h"] for d in docs if d["id"] == sys.argv[2]][0])' "$TMP/list.json" "$name") ||
        fail "$name is not listed: $(cat "$TMP/list.json")"
    offline=$("$SYNCCTL" hash "$TMP/$name.json") || fail "syncctl hash $name"
    stdin=$("$SYNCCTL" hash - <"$TMP/$name.json") || fail "syncctl hash - $name"
    ref=$(python3 "$REF" "$TMP/$name.json") || fail "merkle_hash.py $name"
    [ "$offline" = "$listed" ] || fail "$name: syncctl hash $offline, the node lists $listed"
    [ "$stdin" = "$listed" ] || fail "$name: syncctl hash - $stdin, the node lists $listed"
    [ "$ref" = "$listed" ] || fail "$name: merkle_hash.py $ref, the node lists $listed"
    echo "test_hash: $name $listed"
done
# A backup made before the Merkle hash: its h are legacy hashes (SHA-256 of
# the canonical JSON) and its trailer's digest is over them. `syncctl
# restore` must accept it and find the node's content, now under Merkle
# hashes, the same as the backup's.
python3 - "$TMP/legacy.jsonl" <<'PY'
import hashlib, json, sys
docs = [("a", 3, {"n": 1, "s": "x"}), ("b", 7, {"list": [1, 2], "o": {}})]
lines, leaves = [], []
for id_, v, body in docs:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(canon.encode()).hexdigest()
    lines.append({"coll": "legacy", "id": id_, "v": v, "h": h, "data": body})
    leaves.append(hashlib.sha256(("%s\0%d\0%s" % (id_, v, h)).encode()).digest())
digest = hashlib.sha256(leaves[0] + leaves[1]).hexdigest()
lines.append({"coll": "legacy", "trailer": True, "count": 2, "digest": digest, "seq": 0})
lines.append({"end": True, "collections": 1, "documents": 2})
with open(sys.argv[1], "w") as f:
    for line in lines:
        f.write(json.dumps(line) + "\n")
PY
"$SYNCCTL" --server "$URL" restore "$TMP/legacy.jsonl" >"$TMP/restore.json" 2>"$TMP/restore.err" ||
    fail "restore of a legacy backup: $(cat "$TMP/restore.err")"
python3 -c 'import json,sys; r = json.load(open(sys.argv[1])); assert r["agree"] is True, r' \
    "$TMP/restore.json" || fail "restore of a legacy backup: $(cat "$TMP/restore.json")"
echo "test_hash: a backup with legacy hashes restores and agrees"
echo "test_hash: PASS (${SECONDS} s)"
