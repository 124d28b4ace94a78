#!/usr/bin/env bash
# test_atstart.sh - the check at start of the embedded store of record
# (README "State verified at start"), with real syncd processes.
#
# A node writes two collections (c1: ok-1..ok-3, c2: x-1, x-2) and stops
# cleanly: its data dir then holds store/digests.json (format 1, kind
# rocksdb, the time) with each collection's count and digest, equal to what
# GET .../digest answered. ok-2's body is changed in the stopped store
# (tests/cache_tamper --embedded: the version and stored hash kept). The
# default start (auto: full under 1 GiB) rehashes every body: it logs c1
# and ok-2, answers 503 collection_corrupt naming ok-2 on c1's routes (GET,
# list, PUT), still answers POST c1/verify (naming ok-2, reason body),
# serves c2, shows the finding in /v1/health, and has consumed the digests
# file. --verify-at-start off and digests do not rehash: c1 is served.
# --repair quarantines ok-2 (its record in data/quarantine/c1-*.jsonl),
# deletes it (a tombstone at version 2, published as a delete event; a
# re-create gets version 3) and serves c1. A version changed while stopped
# (x-1, hash kept) is logged as a change since the clean shutdown and c2 is
# served; after a kill -9 the next start says the last run did not stop
# cleanly.
#
# Usage: tests/test_atstart.sh SYNCD SYNCCTL CACHE_TAMPER
set -euo pipefail

SYNCD_BIN="${1:?usage: test_atstart.sh SYNCD SYNCCTL CACHE_TAMPER}"
SYNCCTL="${2:?usage: test_atstart.sh SYNCD SYNCCTL CACHE_TAMPER}"
TAMPER="${3:?usage: test_atstart.sh SYNCD SYNCCTL CACHE_TAMPER}"
TMP="$(mktemp -d /tmp/syncd-test-atstart-XXXXXX)"
D="$TMP/data"
LOG="$TMP/syncd.log"
PID=""
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"

cleanup() {
    if [ -n "$PID" ]; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "test_atstart: FAIL: $*" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
}

# start [FLAGS...]: starts syncd on $D (its log in $LOG, this run's alone)
# and waits (bounded) until it answers.
start() {
    "$SYNCD_BIN" --listen "127.0.0.1:$PORT" --data-dir "$D" "$@" >"$LOG" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$URL/v1/health" && return 0
        kill -0 "$PID" 2>/dev/null || fail "syncd $* exited at start"
        sleep 0.1
    done
    fail "syncd $* did not answer"
}

# stop [SIGNAL]: stops syncd (SIGTERM: a clean shutdown) and waits for it.
stop() {
    kill "-${1:-TERM}" "$PID"
    wait "$PID" || [ "${1:-TERM}" = KILL ] || fail "syncd exited $? on SIG${1:-TERM}"
    PID=""
}

# status METHOD PATH [BODY]: prints the HTTP status; the answer goes to
# $TMP/answer.
status() {
    curl -s -o "$TMP/answer" -w '%{http_code}' -X "$1" ${3:+-d "$3"} "$URL$2"
}

# 1. Writes, a clean stop, the digests file.
start
for i in 1 2 3; do
    [ "$(status PUT /v1/collections/c1/docs/ok-$i "{\"n\":$i}")" = 201 ] || fail "PUT ok-$i"
done
for i in 1 2; do
    [ "$(status PUT /v1/collections/c2/docs/x-$i "{\"x\":$i}")" = 201 ] || fail "PUT x-$i"
done
curl -sf "$URL/v1/collections/c1/digest" >"$TMP/c1.digest" || fail "digest c1"
curl -sf "$URL/v1/collections/c2/digest" >"$TMP/c2.digest" || fail "digest c2"
stop
python3 - "$D/store/digests.json" "$TMP/c1.digest" "$TMP/c2.digest" <<'EOF' ||
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == 1 and d["kind"] == "rocksdb", d
assert d["written"].endswith("Z") and d["written"][:2] == "20", d
for coll, path in (("c1", sys.argv[2]), ("c2", sys.argv[3])):
    want = json.load(open(path))
    got = d["collections"][coll]
    assert got == {"count": want["count"], "digest": want["digest"]}, (coll, got, want)
EOF
    fail "the digests file of a clean shutdown: $(cat "$D/store/digests.json")"
echo "test_atstart: a clean shutdown wrote the digests of c1 and c2 (${SECONDS} s)"

# 2. A body changed while stopped: c1 is refused, naming ok-2; c2 served.
"$TAMPER" --embedded "$D" c1 ok-2 body || fail "cache_tamper ok-2 body"
start
[ ! -e "$D/store/digests.json" ] || fail "the digests file is still there while running"
grep -q "ERROR syncd: start check of the store: collection c1: a stored body does not match its hash: ok-2$" "$LOG" ||
    fail "the log does not name c1 and ok-2"
for req in "GET /v1/collections/c1/docs/ok-1" "GET /v1/collections/c1/docs" \
    "PUT /v1/collections/c1/docs/ok-4 {\"n\":4}"; do
    # shellcheck disable=SC2086
    s=$(status $req)
    [ "$s" = 503 ] && python3 - "$TMP/answer" <<'EOF' || fail "$req: $s $(cat "$TMP/answer")"
import json, sys
a = json.load(open(sys.argv[1]))
assert a["error"] == "collection_corrupt", a
assert "c1" in a["message"] and "ok-2" in a["message"], a
EOF
done
[ "$(status GET /v1/collections/c2/docs/x-1)" = 200 ] || fail "c2 is not served"
[ "$(status POST /v1/collections/c1/verify)" = 200 ] || fail "verify c1: $(cat "$TMP/answer")"
python3 - "$TMP/answer" <<'EOF' || fail "verify c1: $(cat "$TMP/answer")"
import json, sys
a = json.load(open(sys.argv[1]))
assert [(d["id"], d["reason"]) for d in a["differs"]] == [("ok-2", "body")], a
EOF
curl -sf "$URL/v1/health" >"$TMP/health.json" || fail "health"
python3 - "$TMP/health.json" <<'EOF' || fail "health: $(cat "$TMP/health.json")"
import json, sys
c = json.load(open(sys.argv[1]))["start_check"]
assert c["mode"] == "full" and c["auto"] and c["clean"], c
assert c["corrupt"] == {"c1": {"ids": ["ok-2"], "truncated": False}}, c
assert list(c["refused"]) == ["c1"] and c["changed"] == [], c
assert c["collections"] == 2 and c["documents"] == 5 and c["bodies"] == 5, c
EOF
stop
echo "test_atstart: a tampered body: c1 refused naming ok-2, c2 served (${SECONDS} s)"

# 3. Without the rehash, the body is not checked: c1 served.
for mode in off digests; do
    start --verify-at-start "$mode"
    [ "$(status GET /v1/collections/c1/docs/ok-1)" = 200 ] ||
        fail "--verify-at-start $mode: c1 not served"
    grep -q "start check of the store.*$mode" "$LOG" || fail "--verify-at-start $mode: not logged"
    ! grep -q ERROR "$LOG" || fail "--verify-at-start $mode logged an error"
    stop
done
echo "test_atstart: --verify-at-start off and digests skip the rehash (${SECONDS} s)"

# 4. --repair: ok-2 quarantined and deleted, c1 served.
start --repair
grep -q "WARN syncd: --repair: quarantined c1/ok-2 (version 1) and deleted it (version 2)" "$LOG" ||
    fail "--repair did not log ok-2"
[ "$(status GET /v1/collections/c1/docs/ok-1)" = 200 ] || fail "--repair: c1 not served"
[ "$(status GET /v1/collections/c1/docs/ok-2)" = 404 ] || fail "--repair: ok-2 still served"
python3 - "$D"/quarantine/c1-*.jsonl <<'EOF' || fail "the quarantine file: $(cat "$D"/quarantine/*)"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 1, lines
q = lines[0]
assert (q["coll"], q["id"], q["v"]) == ("c1", "ok-2", 1), q
assert q["data"] == {"n": 2, "tampered": True}, q
EOF
# The delete is published (by the outbox republisher): bounded wait.
timeout 15 "$SYNCCTL" --server "$URL" watch c1 --since 0 >"$TMP/watch" 2>/dev/null &
W=$!
for _ in $(seq 150); do
    grep -q '"op":"delete","coll":"c1","id":"ok-2","v":2' "$TMP/watch" && break
    sleep 0.1
done
kill "$W" 2>/dev/null || true
wait "$W" 2>/dev/null || true
grep -q '"op":"delete","coll":"c1","id":"ok-2","v":2' "$TMP/watch" ||
    fail "no delete event of ok-2: $(cat "$TMP/watch")"
[ "$(status PUT /v1/collections/c1/docs/ok-2 '{"n":2}')" = 201 ] || fail "re-create ok-2"
[ "$(curl -s -o /dev/null -w '%header{etag}' "$URL/v1/collections/c1/docs/ok-2")" = '"3"' ] ||
    fail "the re-created ok-2 is not at version 3"
stop
echo "test_atstart: --repair quarantined and deleted ok-2, c1 served (${SECONDS} s)"

# 5. A version changed while stopped: logged as a change since the clean
# shutdown, served; then an unclean stop is said so at the next start.
"$TAMPER" --embedded "$D" c2 x-1 version 5 || fail "cache_tamper x-1 version"
start
grep -q "WARN syncd: start check of the store: collection c2 changed since the clean shutdown" "$LOG" ||
    fail "the change of c2 is not logged"
! grep -q ERROR "$LOG" || fail "a changed version logged an error"
[ "$(status GET /v1/collections/c2/docs/x-1)" = 200 ] || fail "c2 not served"
curl -sf "$URL/v1/health" >"$TMP/health.json" || fail "health"
python3 - "$TMP/health.json" <<'EOF' || fail "health: $(cat "$TMP/health.json")"
import json, sys
c = json.load(open(sys.argv[1]))["start_check"]
assert [x["coll"] for x in c["changed"]] == ["c2"] and c["refused"] == {}, c
EOF
stop KILL
start
grep -q "WARN syncd: start check of the store: no digests of a clean shutdown" "$LOG" ||
    fail "an unclean shutdown is not logged"
stop
echo "test_atstart: a changed version logged, an unclean shutdown said (${SECONDS} s)"
echo "test_atstart: PASS (${SECONDS} s)"
