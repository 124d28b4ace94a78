#!/usr/bin/env bash
# test_volume_push.sh - `syncctl volume push` and `volume verify` end to end
# against a real syncd in the embedded default.
#
# A folder of 12 volumes (11 folders and one .tar.gz archive, indexes made
# by `syncctl volume init`) is pushed into volumes/refs; the document must
# hold every volume with the digest `volume scan` prints. Then one file of
# volume v03 changes (and its index is made again) and a second push must
# change only v03: the watch route's event for it has a patch whose every
# operation is under /volumes/v03/. A file of v05 rewritten with the same
# size and its old mtime is not reread by the next push (the state file
# says it is unchanged), while `--rehash` reads it and refuses with a
# digest problem naming v05 and the file. `volume verify` exits 0 on the
# pushed folder; after a file of v07 is changed it exits 1 naming v07 and
# that file, and a missing volume is named too. On the command line a
# limit names its flag and a second init refuses. Last, a first push that
# loses the race to create its document (a proxy in front of syncd creates
# it, with a member of its own, right before the push's PUT reaches syncd)
# does not overwrite it: the PUT carries If-None-Match: *, gets 409, and
# the push reads the document again and patches it, keeping that member.
#
# Usage: tests/test_volume_push.sh SYNCD SYNCCTL
set -euo pipefail

SYNCD_BIN="${1:?usage: test_volume_push.sh SYNCD SYNCCTL}"
SYNCCTL="${2:?usage: test_volume_push.sh SYNCD SYNCCTL}"
TMP="$(mktemp -d /tmp/syncd-test-volume-XXXXXX)"
PID=""
export XDG_CACHE_HOME="$TMP/cache"

cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_volume_push: FAIL: $*" >&2
    tail -n 20 "$TMP/syncd.log" >&2 || true
    exit 1
}

# The volumes: v00..v10 folders with three files each (one in a
# subfolder), and v11 packed as a .tar.gz.
D="$TMP/vols"
for i in $(seq -w 0 11); do
    mkdir -p "$D/v$i/sub"
    echo "volume $i first" >"$D/v$i/a.txt"
    echo "volume $i second" >"$D/v$i/b.txt"
    head -c 4096 /dev/urandom >"$D/v$i/sub/c.bin"
    "$SYNCCTL" volume init "$D/v$i" >/dev/null || fail "volume init v$i"
done
tar -C "$D/v11" -czf "$D/v11.tar.gz" .
rm -rf "$D/v11"
"$SYNCCTL" volume scan "$D" >"$TMP/scan.json" || fail "volume scan"

# The command line: limits name their flag, init does not overwrite.
set +e
"$SYNCCTL" volume scan "$D" --max-files 5 >/dev/null 2>"$TMP/limit.err"
rc=$?
"$SYNCCTL" volume init "$D/v00" 2>"$TMP/init.err"
rc2=$?
"$SYNCCTL" volume scan "$D" --max-bytes 12parsecs 2>/dev/null
rc3=$?
set -e
[ "$rc" = 1 ] && grep -q "volume v01: file sub/c.bin: more than --max-files 5" "$TMP/limit.err" ||
    fail "scan --max-files 5 exited $rc: $(cat "$TMP/limit.err")"
[ "$rc2" = 1 ] && grep -q "already exists" "$TMP/init.err" ||
    fail "a second init exited $rc2: $(cat "$TMP/init.err")"
[ "$rc3" = 2 ] || fail "a bad --max-bytes exited $rc3, not 2"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER="http://127.0.0.1:$PORT"
"$SYNCD_BIN" --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" \
    >"$TMP/syncd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "$SERVER/v1/health" && break
    sleep 0.1
done
curl -sf -o /dev/null "$SERVER/v1/health" || fail "syncd did not start"
S() { "$SYNCCTL" --server "$SERVER" "$@"; }

# First push: the document holds what the scan found.
S volume push volumes refs "$D" >"$TMP/push1.json" || fail "first push"
S get volumes refs >"$TMP/doc1.json" || fail "get after the first push"
python3 - "$TMP/scan.json" "$TMP/doc1.json" <<'PY' || fail "first push: document"
import json, sys
scan, doc = (json.load(open(p)) for p in sys.argv[1:3])
assert doc["kind"] == "VolumeCollection" and doc["name"] == "refs", doc
assert sorted(doc["volumes"]) == ["v%02d" % i for i in range(12)], doc
for name, vol in scan["volumes"].items():
    got = doc["volumes"][name]
    for k in ("path", "digest", "size", "files"):
        assert got[k] == vol[k], (name, k, got[k], vol[k])
assert doc["volumes"]["v11"]["path"] == "v11.tar.gz"
assert doc["volumes"]["v03"]["files"] == 3
PY
echo "test_volume_push: first push: 12 volumes (${SECONDS} s)"

# One file of v03 changes: the second push is a patch of v03 only.
SEQ=$(S ls volumes | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
echo "volume 3 changed" >"$D/v03/a.txt"
rm "$D/v03/volume-index.json"
"$SYNCCTL" volume init "$D/v03" >/dev/null || fail "volume init v03 again"
S volume push volumes refs "$D" >"$TMP/push2.json" || fail "second push"
curl -sN --max-time 2 "$SERVER/v1/collections/volumes/watch?since=$SEQ" \
    >"$TMP/events.txt" || true
python3 - "$TMP/push2.json" "$TMP/events.txt" "$TMP/doc1.json" <<'PY' || fail "second push: event $(cat "$TMP/events.txt")"
import json, sys
push = json.load(open(sys.argv[1]))
assert push["changed"] == ["v03"] and push["removed"] == [], push
events = [json.loads(l[6:]) for l in open(sys.argv[2]) if l.startswith("data: ")]
events = [e for e in events if e.get("id") == "refs"]
assert len(events) == 1, events
ev = events[0]
assert ev["op"] == "update" and ev["v"] == push["v"], ev
ops = ev["patch"]
assert ops and all(o["path"].startswith("/volumes/v03/") for o in ops), ops
assert any(o["path"] == "/volumes/v03/digest" for o in ops), ops
doc1 = json.load(open(sys.argv[3]))
assert not any(o["path"] == "/volumes/v03/digest" and
               o["value"] == doc1["volumes"]["v03"]["digest"] for o in ops)
print("test_volume_push: second push: event seq %d, %d ops, all under "
      "/volumes/v03/" % (ev["seq"], len(ops)))
PY

# A push with nothing changed writes nothing.
S volume push volumes refs "$D" >"$TMP/push3.json" || fail "third push"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); assert p["changed"]==[] and p["removed"]==[], p' \
    "$TMP/push3.json" || fail "a push without changes changed $(cat "$TMP/push3.json")"

# Same size, old mtime: the state file keeps the push from rereading the
# file; --rehash reads it and refuses.
touch -r "$D/v05/b.txt" "$TMP/mtime"
echo "volume 05 SECOND" >"$D/v05/b.txt"
touch -r "$TMP/mtime" "$D/v05/b.txt"
S volume push volumes refs "$D" >"$TMP/push4.json" || fail "push with the state file"
set +e
S volume push volumes refs "$D" --rehash >"$TMP/push5.json" 2>"$TMP/push5.err"
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "volume v05: file b.txt: digest" "$TMP/push5.err" ||
    fail "push --rehash exited $rc: $(cat "$TMP/push5.err")"
echo "volume 05 second" >"$D/v05/b.txt"
echo "test_volume_push: unchanged files not reread, --rehash rereads (${SECONDS} s)"

# verify: 0 on the pushed folder, 1 naming the volume and the file.
S volume verify volumes refs "$D" >"$TMP/verify1.json" 2>"$TMP/verify1.err" ||
    fail "verify of the pushed folder: $(cat "$TMP/verify1.err")"
echo "volume 07 edited" >>"$D/v07/b.txt"
set +e
S volume verify volumes refs "$D" >"$TMP/verify2.json" 2>"$TMP/verify2.err"
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "volume v07: file b.txt" "$TMP/verify2.err" ||
    fail "verify after an edit exited $rc: $(cat "$TMP/verify2.err")"
python3 - "$TMP/verify2.json" <<'PY' || fail "verify report $(cat "$TMP/verify2.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is False
assert [(d["volume"], d["file"], d["problem"]) for d in r["differences"]] == \
    [("v07", "b.txt", "size")], r["differences"]
PY
mv "$D/v09" "$TMP/v09-away"
set +e
S volume verify volumes refs "$D" >"$TMP/verify3.json" 2>"$TMP/verify3.err"
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "volume v09: in the synced document, missing here" \
    "$TMP/verify3.err" || fail "verify without v09 exited $rc: $(cat "$TMP/verify3.err")"
echo "test_volume_push: verify exits 0, then 1 naming v07 b.txt and v09 (${SECONDS} s)"
mv "$TMP/v09-away" "$D/v09"
echo "volume 07 second" >"$D/v07/b.txt"

# A first push that loses the race to create the document: a proxy in
# front of syncd creates it (with a member of its own) just before it
# forwards the push's first PUT.
PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$PPORT" "$PORT" "$TMP/proxy.log" <<'PY' &
import http.client, http.server, json, sys
pport, port, logpath = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
raced = False

class Proxy(http.server.BaseHTTPRequestHandler):
    def forward(self):
        global raced
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        with open(logpath, "a") as log:
            log.write("%s %s %s\n" % (self.command, self.path,
                                      self.headers.get("If-None-Match")))
        if self.command == "PUT" and self.path.endswith("/docs/race") and not raced:
            raced = True
            c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("PUT", self.path, json.dumps({"owner": "other", "volumes": {}}),
                      {"If-None-Match": "*", "Content-Type": "application/json"})
            assert c.getresponse().status == 201
        c = http.client.HTTPConnection("127.0.0.1", port)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        c.request(self.command, self.path, body, headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_PUT = do_PATCH = forward
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", pport), Proxy).serve_forever()
PY
PROXY=$!
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$PPORT/v1/health" && break
    sleep 0.1
done
set +e
"$SYNCCTL" --server "http://127.0.0.1:$PPORT" volume push volumes race "$D" \
    >"$TMP/race.json" 2>"$TMP/race.err"
rc=$?
set -e
kill "$PROXY" 2>/dev/null || true
wait "$PROXY" 2>/dev/null || true
[ "$rc" = 0 ] || fail "the raced first push exited $rc: $(cat "$TMP/race.err")"
grep -q "^PUT /v1/collections/volumes/docs/race \*$" "$TMP/proxy.log" ||
    fail "the first push's PUT did not carry If-None-Match: * ($(cat "$TMP/proxy.log"))"
grep -q "^PATCH /v1/collections/volumes/docs/race " "$TMP/proxy.log" ||
    fail "the raced push did not patch the document ($(cat "$TMP/proxy.log"))"
S get volumes race >"$TMP/race-doc.json" || fail "get volumes/race"
python3 - "$TMP/race-doc.json" <<'PY' || fail "the raced document: $(cat "$TMP/race-doc.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["owner"] == "other", doc
assert sorted(doc["volumes"]) == ["v%02d" % i for i in range(12)], doc
PY
echo "test_volume_push: a first push that lost the race patched the document, keeping its member (${SECONDS} s)"
echo "test_volume_push: PASS (${SECONDS} s)"
