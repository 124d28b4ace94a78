#!/usr/bin/env bash
# test_backup.sh - backups and restores against real embedded syncd nodes:
# GET .../export, `syncctl backup|restore|checkpoint` and `syncd backup`.
#
# 1. A write storm (4 writers updating, deleting and re-creating 60
#    documents of collection storm for a few seconds, every acknowledged
#    write logged with its version from the ETag) runs while `syncctl
#    backup` runs three times: every document of every backup must be at
#    a version some writer wrote, with exactly the body written then.
# 2. After the storm, a gzip backup of every collection restored into an
#    empty node gives the same ids and content hashes (versions start
#    again at 1), and `restore` reports agreeing content digests. A second
#    restore with --mode=empty is refused naming the collection;
#    --mode=overwrite brings a changed document back to the backup's body
#    with a new version, and exits 1 naming the collection when the target
#    holds a document the backup lacks.
# 3. A backup that fails leaves the file it was to replace as it was. A
#    one-byte edit of a body, an edited version, a file cut mid-line, a
#    file cut between two collections and a cut gzip file are each refused
#    naming the collection, and the target node stays empty.
# 4. `syncd backup` refuses a data dir a running node holds (naming its
#    pid); `syncctl checkpoint` takes a checkpoint through the running
#    node; `syncd backup` takes one of the stopped node. Nodes started on
#    a copy of each serve the same collection digests.
# 5. N documents of 1 KB (tests/backup_seed; N = 3000 by default, 100000
#    with the argument "large": test_backup_large, added with
#    cmake -DSYNCD_LARGE_TESTS=ON) are exported by `syncctl backup` while the node's
#    RSS is sampled (printed before, peak and after; its growth must stay
#    under 64 MiB, far below the export's size); a client that
#    disconnects mid-export leaves the node serving; every node exits 0
#    on SIGTERM (under ASan, with leak detection).
# 6. The backup of step 2 restored into an empty cluster (FerretDB, Redis
#    and three nodes from scripts/cluster.sh) and exported again from
#    another node holds the same documents at version 1, and every node
#    serves the store's digests.
#
# Usage: tests/test_backup.sh SYNCD SYNCCTL BACKUP_SEED [large]
set -euo pipefail

SYNCD="${1:?usage: test_backup.sh SYNCD SYNCCTL BACKUP_SEED [large]}"
SYNCCTL="${2:?usage: test_backup.sh SYNCD SYNCCTL BACKUP_SEED [large]}"
SEED="${3:?usage: test_backup.sh SYNCD SYNCCTL BACKUP_SEED [large]}"
LARGE_N=3000
if [ "${4:-}" = large ]; then LARGE_N=100000; fi
TMP="$(mktemp -d /tmp/syncd-test-backup-XXXXXX)"
PIDS=()

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
export SYNCD_BIN="$SYNCD" SYNCD_CLUSTER_DIR="$TMP/cluster"

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    local f
    echo "test_backup: FAIL: $*" >&2
    for f in "$TMP"/*.log; do
        [ -e "$f" ] || continue
        echo "--- $f (tail)" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

# start_node NAME DATA_DIR [FLAGS...]: starts syncd and sets NAME_URL and
# NAME_PID.
start_node() {
    local name="$1" dir="$2" port pid i
    shift 2
    port="$(free_port)"
    "$SYNCD" --data-dir "$dir" --listen "127.0.0.1:$port" --node-id "$name" \
        "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for i in $(seq 1 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/v1/health"; then
            printf -v "${name}_URL" 'http://127.0.0.1:%s' "$port"
            printf -v "${name}_PID" '%s' "$pid"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || fail "node $name exited at start"
        sleep 0.1
    done
    fail "node $name did not answer"
}

# stop_node PID NAME: SIGTERM, and the node must exit 0 (no leak, no crash).
stop_node() {
    local rc=0
    kill -TERM "$1"
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail "node $2 exited with status $rc"
}

# digests URL COLL...: "coll count digest" lines of the node's digests.
digests() {
    local url="$1" c
    shift
    for c in "$@"; do
        curl -sf "$url/v1/collections/$c/digest" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); print(sys.argv[1], d["count"], d["digest"])' "$c"
    done
}

# rss PID: the process's resident set in KiB.
rss() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# ---- 1. A backup under a write storm is a consistent set -------------

start_node A "$TMP/a"
cat >"$TMP/storm.py" <<'EOF'
import http.client, json, random, subprocess, sys, threading, time
url, syncctl, out = sys.argv[1], sys.argv[2], sys.argv[3]
host = url.split("//")[1]
written = {}  # (id, v) -> body written at that version
lock = threading.Lock()

def request(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("ETag")

def put(conn, coll, i, body):
    st, etag = request(conn, "PUT", "/v1/collections/%s/docs/doc-%02d" % (coll, i), body)
    assert st in (200, 201), "PUT %s/%d: %d" % (coll, i, st)
    with lock:
        written[(coll, "doc-%02d" % i, int(etag.strip('"')))] = body

conn = http.client.HTTPConnection(host)
for i in range(60):
    put(conn, "storm", i, {"w": -1, "k": 0, "pad": "p" * (i * 13 % 200)})
for i in range(10):
    put(conn, "other", i, {"n": i})
stop = time.time() + 4

def writer(w):
    c = http.client.HTTPConnection(host)
    rnd = random.Random(w)
    k = 0
    while time.time() < stop:
        k += 1
        i = rnd.randrange(60)
        if rnd.random() < 0.05:
            st, _ = request(c, "DELETE", "/v1/collections/storm/docs/doc-%02d" % i)
            assert st in (200, 404), "DELETE: %d" % st
        else:
            put(c, "storm", i, {"w": w, "k": k, "pad": "q" * rnd.randrange(300)})

threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
for t in threads:
    t.start()
backups = []
for b in range(3):
    time.sleep(0.8)
    path = "%s.%d.jsonl" % (out, b)
    subprocess.run([syncctl, "--server", url, "backup", "storm", "other",
                    "--out", path], check=True, stdout=subprocess.DEVNULL)
    backups.append(path)
for t in threads:
    t.join()
docs = 0
for path in backups:
    for line in open(path):
        d = json.loads(line)
        if "id" not in d:
            continue
        key = (d["coll"], d["id"], d["v"])
        assert key in written, "%s: %s v%d was never written" % (path, d["id"], d["v"])
        assert written[key] == d["data"], "%s: %s v%d holds another body" % (path, d["id"], d["v"])
        docs += 1
print("storm: %d writes, 3 backups of %d documents in all, each at a version written with its body" % (len(written), docs))
EOF
python3 "$TMP/storm.py" "$A_URL" "$SYNCCTL" "$TMP/storm" || fail "backup under a write storm"

# ---- 2. Restore into an empty node reproduces the content --------------

"$SYNCCTL" --server "$A_URL" backup --out "$TMP/full.jsonl.gz" --gzip \
    >"$TMP/backup.out" || fail "backup of every collection"
gzip -t "$TMP/full.jsonl.gz" || fail "the --gzip backup is no gzip file"
start_node B "$TMP/b"
"$SYNCCTL" --server "$B_URL" restore "$TMP/full.jsonl.gz" >"$TMP/restore.out" ||
    fail "restore into an empty node"
cat >"$TMP/same.py" <<'EOF'
import json, sys, urllib.request
a, b, versions_one = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def docs(url, coll):
    return json.load(urllib.request.urlopen(url + "/v1/collections/%s/docs?limit=10000" % coll))["docs"]
for coll in ("storm", "other"):
    da, db = docs(a, coll), docs(b, coll)
    assert [(d["id"], d["h"]) for d in da] == [(d["id"], d["h"]) for d in db], "%s: content differs" % coll
    if versions_one:
        assert all(d["v"] == 1 for d in db), "%s: restored versions are not 1" % coll
print("same ids and content hashes on both nodes")
EOF
python3 "$TMP/same.py" "$A_URL" "$B_URL" 1 || fail "restore did not reproduce the content"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["agree"] and len(r["collections"]) == 2, r' \
    "$TMP/restore.out" || fail "restore did not report agreeing digests"

if "$SYNCCTL" --server "$B_URL" restore "$TMP/full.jsonl.gz" >/dev/null 2>"$TMP/err"; then
    fail "--mode=empty restored over a non-empty collection"
fi
grep -q "collection other on .* is not empty" "$TMP/err" ||
    fail "--mode=empty refusal does not name the collection: $(cat "$TMP/err")"
curl -sf -o /dev/null -X PUT -d '{"changed":true}' "$B_URL/v1/collections/other/docs/doc-03"
"$SYNCCTL" --server "$B_URL" restore "$TMP/full.jsonl.gz" --mode=overwrite >/dev/null ||
    fail "--mode=overwrite"
v=$(curl -sf -D - -o "$TMP/doc" "$B_URL/v1/collections/other/docs/doc-03" | tr -d '\r' | awk -F'"' '/^ETag/ {print $2}')
[ "$v" = 3 ] || fail "an overwritten document is at version $v, not 3"
grep -q '"n":3' "$TMP/doc" || fail "an overwritten document does not hold the backup's body"
curl -sf -o /dev/null -X PUT -d '{"extra":true}' "$B_URL/v1/collections/other/docs/zz-extra"
if "$SYNCCTL" --server "$B_URL" restore "$TMP/full.jsonl.gz" --mode=overwrite >/dev/null 2>"$TMP/err"; then
    fail "restore agreed although the target holds a document the backup lacks"
fi
grep -q "collection other: the node holds 11 documents" "$TMP/err" ||
    fail "the content mismatch does not name the collection: $(cat "$TMP/err")"
echo "test_backup: restore checks passed"

# ---- 3. Edited and truncated files are refused, nothing written -------

start_node C "$TMP/c"
"$SYNCCTL" --server "$A_URL" backup --out "$TMP/plain.jsonl" >/dev/null
sum=$(md5sum <"$TMP/plain.jsonl")
if "$SYNCCTL" --server "$A_URL" backup storm Bad! --out "$TMP/plain.jsonl" >/dev/null 2>&1; then
    fail "a backup of a bad collection succeeded"
fi
[ "$(md5sum <"$TMP/plain.jsonl")" = "$sum" ] && [ ! -e "$TMP/plain.jsonl.partial" ] ||
    fail "a failed backup changed the file it was to replace"
python3 - "$TMP/plain.jsonl" "$TMP" <<'EOF'
import sys
src, tmp = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
lines = data.split(b"\n")
# One byte of a body of collection other.
i = next(k for k, l in enumerate(lines) if l.startswith(b'{"coll":"other","id":"doc-05"'))
edited = list(lines)
edited[i] = edited[i].replace(b'"n":5', b'"n":6')
open(tmp + "/edit-body.jsonl", "wb").write(b"\n".join(edited))
# A version of collection storm.
j = next(k for k, l in enumerate(lines) if l.startswith(b'{"coll":"storm","id":'))
edited = list(lines)
pos = edited[j].index(b'"v":') + 4
digit = edited[j][pos]
edited[j] = edited[j][:pos] + (b"8" if digit == ord("9") else bytes([digit + 1])) + edited[j][pos + 1:]
open(tmp + "/edit-version.jsonl", "wb").write(b"\n".join(edited))
# Cut in the middle of a line of collection storm (the last one).
open(tmp + "/cut-line.jsonl", "wb").write(data[:len(data) - 200])
# Cut right after the trailer of the first collection.
t = next(k for k, l in enumerate(lines) if b'"trailer":true' in l)
open(tmp + "/cut-between.jsonl", "wb").write(b"\n".join(lines[:t + 1]) + b"\n")
EOF
gzip -c "$TMP/plain.jsonl" | head -c 2000 >"$TMP/cut.jsonl.gz"
check_refused() {
    local file="$1" want="$2"
    if "$SYNCCTL" --server "$C_URL" restore "$file" >/dev/null 2>"$TMP/err"; then
        fail "$file was restored"
    fi
    grep -q -- "$want" "$TMP/err" || fail "$file: refusal '$(cat "$TMP/err")' lacks '$want'"
}
check_refused "$TMP/edit-body.jsonl" "collection other: document doc-05: its data does not hash"
check_refused "$TMP/edit-version.jsonl" "collection storm: its lines hold"
check_refused "$TMP/cut-line.jsonl" "collection storm: malformed JSON"
check_refused "$TMP/cut-between.jsonl" "no end line after collection other"
check_refused "$TMP/cut.jsonl.gz" "collection storm"
[ "$(curl -sf "$C_URL/v1/collections")" = '{"collections":[]}' ] ||
    fail "a refused restore wrote something: $(curl -sf "$C_URL/v1/collections")"
echo "test_backup: edited and truncated files refused, nothing written"

# ---- 4. Checkpoints, live and offline ----------------------------------

want="$(digests "$A_URL" storm other)"
if "$SYNCD" backup --data-dir "$TMP/a" --out "$TMP/cp-refused" 2>"$TMP/err"; then
    fail "syncd backup ran on the data dir of a running node"
fi
grep -q "in use by a running syncd (pid $A_PID)" "$TMP/err" ||
    fail "syncd backup on a running node: $(cat "$TMP/err")"
"$SYNCCTL" --server "$A_URL" checkpoint "$TMP/cp-live" >/dev/null || fail "syncctl checkpoint"
stop_node "$A_PID" A
"$SYNCD" backup --data-dir "$TMP/a" --out "$TMP/cp-off" >/dev/null || fail "syncd backup"
cp -a "$TMP/cp-off" "$TMP/cp-copy"
start_node D "$TMP/cp-copy"
start_node E "$TMP/cp-live"
[ "$(digests "$D_URL" storm other)" = "$want" ] || fail "a node on a copy of syncd backup serves other digests"
[ "$(digests "$E_URL" storm other)" = "$want" ] || fail "a node on syncctl checkpoint serves other digests"
echo "test_backup: checkpoints serve the same digests"
for n in B C D E; do
    pid_var="${n}_PID"
    stop_node "${!pid_var}" "$n"
done

# ---- 5. A large export in constant memory; a client that goes away ----

mkdir -p "$TMP/l/store"
"$SEED" "$TMP/l" big "$LARGE_N" 1024 || fail "backup_seed"
# A small quarantine, so that ASan's freed-memory hold does not hide
# whether the daemon's own memory grows.
ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=16" start_node L "$TMP/l"
before=$(rss "$L_PID")
peak=$before
"$SYNCCTL" --server "$L_URL" backup big --out "$TMP/big.jsonl" >"$TMP/big.out" &
bpid=$!
while kill -0 "$bpid" 2>/dev/null; do
    r=$(rss "$L_PID")
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.1
done
wait "$bpid" || fail "backup of $LARGE_N documents"
after=$(rss "$L_PID")
size=$(stat -c %s "$TMP/big.jsonl")
echo "test_backup: export of $LARGE_N documents ($((size / 1048576)) MiB): daemon RSS before $((before / 1024)) MiB, peak $((peak / 1024)) MiB, after $((after / 1024)) MiB"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["documents"] == int(sys.argv[2]), r' \
    "$TMP/big.out" "$LARGE_N" || fail "the backup does not hold $LARGE_N documents"
[ $((peak - before)) -lt 65536 ] || fail "the daemon grew by $(((peak - before) / 1024)) MiB during the export"
curl -sN "$L_URL/v1/collections/big/export" | head -c 300000 >/dev/null || true
curl -sf -o /dev/null "$L_URL/v1/health" || fail "the node stopped serving after a client left mid-export"
stop_node "$L_PID" L

# ---- 6. Restore into an empty cluster (FerretDB, Redis, three nodes) ---

"$ROOT/scripts/cluster.sh" start >/dev/null || fail "the cluster did not start"
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
"$SYNCCTL" --server "$NODE1" restore "$TMP/full.jsonl.gz" >"$TMP/restore.out" ||
    fail "restore into an empty cluster"
"$SYNCCTL" --server "$NODE2" backup --out "$TMP/cluster.jsonl" >/dev/null ||
    fail "backup of the cluster"
cat >"$TMP/cluster.py" <<'EOF'
import gzip, json, sys
def docs(lines):
    return [(d["coll"], d["id"], d["h"], d["data"], d["v"]) for d in map(json.loads, lines) if "id" in d]
a = docs(gzip.open(sys.argv[1], "rt"))
b = docs(open(sys.argv[2]))
assert [x[:4] for x in a] == [x[:4] for x in b], "the cluster holds other documents"
assert all(x[4] == 1 for x in b), "restored versions are not 1"
print("cluster: %d documents restored and exported again through FerretDB" % len(b))
EOF
python3 "$TMP/cluster.py" "$TMP/full.jsonl.gz" "$TMP/cluster.jsonl" ||
    fail "the cluster's backup differs from the restored one"
# count_digest URL: the "count" and "digest" of a digest answer.
count_digest() {
    curl -sf "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["count"], d["digest"])'
}
for c in storm other; do
    store=$(count_digest "$NODE1/v1/collections/$c/digest?source=store")
    for n in "$NODE1" "$NODE2" "$NODE3"; do
        for _ in $(seq 1 100); do
            [ "$(count_digest "$n/v1/collections/$c/digest")" = "$store" ] && break
            sleep 0.1
        done
        [ "$(count_digest "$n/v1/collections/$c/digest")" = "$store" ] ||
            fail "node $n does not serve the store's digest of $c"
    done
done
echo "test_backup: restore into an empty cluster: every node serves the store's digests"
echo "test_backup: PASS"
