#!/usr/bin/env bash
# test_netfault.sh - three syncd nodes (scripts/cluster.sh) whose every link
# to Redis and to FerretDB goes through a Toxiproxy proxy of its own, under
# a write storm with network faults, one after the other in one cluster:
#
#   latency     50 ms +- 20 on every link, both directions
#   bandwidth   every link limited to 8 KB/s each way
#   stall       node 2's links to MongoDB and Redis accept and never answer
#               (`timeout` toxic); node 2's calls must fail within
#               --request-timeout with a clear error, not hang
#   half-open   node 3's links deliver its requests but never the answers
#               (`timeout` toxic downstream only): its writes commit in the
#               store and it cannot know
#   partition   node 1's Redis proxy disabled for 20 s, then enabled
#
# In each phase 6 clients (two per document, on two nodes) add distinct keys
# to three documents with JSON Patch while readers sample every node; the
# fault is applied a second into the storm and healed when the storm ends.
# A write whose answer is lost is retried with the same key and value, which
# changes nothing when it had committed, so version v of a document holds
# exactly v - 1 keys. After each phase:
#   - every acknowledged key is in the store of record (the export);
#   - every node serves every document at the store's version and hash
#     within the anti-entropy interval (plus slack for the pass itself) of
#     the fault healing and the last write (times printed per fault kind);
#   - every watcher (syncctl watch on each node from seq 1) holds each
#     committed version exactly once, in order, seqs without a gap
#     (tests/stream_check.c against FerretDB read directly);
# and at the end every body a reader was served is the store's body at that
# version (as far as the watch stream tells it: see the check at the end),
# so no node served a version the store never had.
#
# Usage: tests/test_netfault.sh SYNCD SYNCCTL STREAM_CHECK
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
export SYNCD_BIN="${1:?usage: test_netfault.sh SYNCD SYNCCTL STREAM_CHECK}"
SYNCCTL="${2:?usage: test_netfault.sh SYNCD SYNCCTL STREAM_CHECK}"
CHECK="${3:?usage: test_netfault.sh SYNCD SYNCCTL STREAM_CHECK}"
TOXIPROXY="${SYNCD_TOXIPROXY:-$ROOT/.tools/bin/toxiproxy-server}"
TMP="$(mktemp -d /tmp/syncd-test-netfault-XXXXXX)"
AE_MS=2000              # --anti-entropy-interval
REQUEST_TIMEOUT_MS=8000 # --request-timeout
SLACK_MS=1500           # for a loaded machine, on top of a deadline
export SYNCD_CLUSTER_DIR="$TMP/cluster"
export SYNCD_CLUSTER_ARGS="--anti-entropy-interval ${AE_MS}ms --store-timeout 1s --edit-timeout 6s --request-timeout ${REQUEST_TIMEOUT_MS}ms --bus-timeout 1s --max-retries 100 --log-level info"
CLUSTER="$ROOT/scripts/cluster.sh"
DOCS=(d1 d2 d3)
WATCHERS=()
CLIENTS=()
READERS=()
TP_PID=""
FAILED=()
RESULTS=""

cleanup() {
    local p
    for p in "${CLIENTS[@]}" "${READERS[@]}" "${WATCHERS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    "$CLUSTER" stop || true
    if [ -n "$TP_PID" ]; then
        kill "$TP_PID" 2>/dev/null || true
        wait "$TP_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

logs() {
    local f
    for f in "$SYNCD_CLUSTER_DIR"/node*/syncd.log; do
        echo "--- $f" >&2
        tail -n 30 "$f" >&2 || true
    done
}

fail() {
    echo "test_netfault: FAIL: $*" >&2
    logs
    exit 1
}

now_ms() { date +%s%3N; }

# ---- Toxiproxy --------------------------------------------------------------

[ -x "$TOXIPROXY" ] || fail "no Toxiproxy at $TOXIPROXY (run scripts/setup.sh)"
TP_PORT=$(free_port)
TP="http://127.0.0.1:$TP_PORT"
LOG_LEVEL=warn "$TOXIPROXY" -host 127.0.0.1 -port "$TP_PORT" \
    >"$TMP/toxiproxy.log" 2>&1 &
TP_PID=$!
for _ in $(seq 200); do curl -sf "$TP/version" >/dev/null && break; sleep 0.1; done
curl -sf "$TP/version" >/dev/null || fail "Toxiproxy did not start"

# tp METHOD PATH [JSON]: one call to Toxiproxy's API; fails the test unless
# it answers 2xx. Prints the answer.
tp() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X "$1" ${3:+-d "$3"} "$TP$2") ||
        fail "Toxiproxy $1 $2: no answer"
    case "${out##*$'\n'}" in
    2??) printf '%s\n' "${out%$'\n'*}" ;;
    *) fail "Toxiproxy $1 $2 $3: ${out//$'\n'/ }" ;;
    esac
}

# proxy NAME UPSTREAM_PORT: creates a proxy on a free port; prints the port.
proxy() {
    tp POST /proxies \
        "{\"name\":\"$1\",\"listen\":\"127.0.0.1:0\",\"upstream\":\"127.0.0.1:$2\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"].rsplit(":",1)[1])'
}

# toxic PROXY NAME TYPE STREAM ATTRIBUTES: adds a toxic.
toxic() {
    tp POST "/proxies/$1/toxics" \
        "{\"name\":\"$2\",\"type\":\"$3\",\"stream\":\"$4\",\"attributes\":$5}" >/dev/null
}

# untoxic PROXY NAME: removes a toxic.
untoxic() { tp DELETE "/proxies/$1/toxics/$2" >/dev/null; }

# enable PROXY true|false: enables or disables (closes every connection and
# refuses new ones) a proxy.
enable() { tp POST "/proxies/$1" "{\"enabled\":$2}" >/dev/null; }

ALL_PROXIES=(mongo1 mongo2 mongo3 redis1 redis2 redis3)

# ---- Cluster ----------------------------------------------------------------

"$CLUSTER" start >/dev/null
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES=("$NODE1" "$NODE2" "$NODE3")
# Each node is restarted on its own pair of proxies before any write, once
# the killed process has let go of its data dir.
for n in 1 2 3; do
    export "NODE${n}_MONGO_URI=mongodb://127.0.0.1:$(proxy "mongo$n" "$MONGO_PORT")/"
    export "NODE${n}_REDIS_URL=redis://127.0.0.1:$(proxy "redis$n" "$REDIS_PORT")"
    pid=$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")
    "$CLUSTER" kill-node "$n"
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    "$CLUSTER" start-node "$n"
done

doc() { echo "/v1/collections/c/docs/$1"; }

for d in "${DOCS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"items":{}}' \
        "$NODE1$(doc "$d")")
    [ "$code" = 201 ] || fail "create of $d answered $code"
done

# watch NAME NODE: syncctl watch from seq 1 into $TMP/NAME, in the
# background (it reconnects by itself and exits only on a resync).
watch() {
    "$SYNCCTL" --server "$2" watch c --since 0 >"$TMP/$1" 2>"$TMP/$1.err" &
    WATCHERS+=($!)
}
watch w1 "$NODE1"
watch w2 "$NODE2"
watch w3 "$NODE3"

# reader N: samples node N's documents until $TMP/stop exists, appending
# "NODE DOC ETAG BODY" lines to $TMP/samples.N.
reader() {
    local n="$1" node="${NODES[$(($1 - 1))]}" d etag body
    while [ ! -e "$TMP/stop" ]; do
        for d in "${DOCS[@]}"; do
            body=$(curl -s -D "$TMP/hdr.$n" --max-time 10 "$node$(doc "$d")") ||
                continue
            etag=$(tr -d '\r"' <"$TMP/hdr.$n" | awk 'tolower($1)=="etag:" {print $2}')
            [ -n "$etag" ] && echo "$n $d $etag $body" >>"$TMP/samples.$n"
        done
        sleep 0.05
    done
}

# client PHASE I NODE DOC: adds keys PHASE-cI-1, -2, ... to DOC through NODE
# until $TMP/stop exists, each retried (same key, same value) until it is
# answered 200; acknowledged keys go to $TMP/acked. Answers other than 200
# are logged to $TMP/answers.PHASE as "NODE STATUS MILLISECONDS BODY".
client() {
    local phase="$1" i="$2" node="$3" path k=1 key code t0 t1
    path=$(doc "$4")
    while [ ! -e "$TMP/stop" ]; do
        key="$phase-c$i-$k"
        t0=$(now_ms)
        code=$(curl -s -o "$TMP/out.$i" -w '%{http_code}' --max-time 30 \
            -X PATCH -H 'Content-Type: application/json-patch+json' \
            -d "[{\"op\":\"add\",\"path\":\"/items/$key\",\"value\":$k}]" \
            "$node$path" || true)
        t1=$(now_ms)
        if [ "$code" = 200 ]; then
            echo "$4 $key" >>"$TMP/acked"
            k=$((k + 1))
        else
            echo "$node $code $((t1 - t0)) $(cat "$TMP/out.$i" 2>/dev/null)" \
                >>"$TMP/answers.$phase"
            sleep 0.1
        fi
    done
}

# converge: polls (bounded: 15 s) until every node lists exactly the ids,
# versions and hashes that the store holds (its export); prints the time
# that took in ms, or fails.
converge() {
    python3 - "${NODES[@]}" <<'EOF'
import json, sys, time, urllib.request

def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()

def store():
    rows = [json.loads(l) for l in get(sys.argv[1] + "/v1/collections/c/export").splitlines()]
    return sorted((r["id"], r["v"], r["h"]) for r in rows if "id" in r)

def node(url):
    docs = json.loads(get(url + "/v1/collections/c/docs?limit=1000"))["docs"]
    return sorted((d["id"], d["v"], d["h"]) for d in docs)

t0 = time.monotonic()
while time.monotonic() - t0 < 15:
    try:
        want = store()
        if all(node(n) == want for n in sys.argv[1:]):
            print(int((time.monotonic() - t0) * 1000))
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.02)
sys.exit(1)
EOF
}

# phase NAME HOLD_SECONDS APPLY HEAL: runs the storm with the fault that
# the function APPLY sets up and HEAL removes, then checks.
phase() {
    local name="$1" hold="$2" apply="$3" heal="$4" i p t_heal t_end t_conv
    local acked refused
    rm -f "$TMP/stop"
    for i in 1 2 3 4 5 6; do
        client "$name" "$i" "${NODES[$((i % 3))]}" "${DOCS[$(((i - 1) / 2))]}" &
        CLIENTS+=($!)
    done
    for i in 1 2 3; do
        reader "$i" &
        READERS+=($!)
    done
    sleep 1
    "$apply"
    sleep "$hold"
    "$heal"
    t_heal=$(now_ms)
    touch "$TMP/stop"
    for p in "${CLIENTS[@]}" "${READERS[@]}"; do wait "$p" || true; done
    CLIENTS=()
    READERS=()
    t_end=$(now_ms)
    converge >/dev/null ||
        fail "$name: the nodes do not serve what the store holds 15 s after the last write"
    t_conv=$(now_ms)
    acked=$(grep -c "^d[0-9] $name-" "$TMP/acked" || true)
    refused=0
    [ ! -f "$TMP/answers.$name" ] || refused=$(wc -l <"$TMP/answers.$name")
    RESULTS="$RESULTS  $name: converged $((t_conv - t_heal)) ms after the fault healed, $((t_conv - t_end)) ms after the last answer; $acked writes acknowledged, $refused refused
"
    # The first anti-entropy pass that starts after the last write repairs
    # what the bus did not deliver: at most an interval, plus the pass
    # itself and this poll on a loaded machine (the slack).
    [ $((t_conv - t_end)) -le $((AE_MS + SLACK_MS)) ] ||
        FAILED+=("$name: converged $((t_conv - t_end)) ms after the last answer (anti-entropy interval $AE_MS ms, slack $SLACK_MS ms)")
    check_acked "$name"
    check_streams "$name"
    [ "$name" != stall ] || check_stalled_answers
}

# check_stalled_answers: every answer node 2 gave while its links stalled
# came within the request timeout (and some slack for a loaded machine) and
# is a 503 with an error code and a message: no call hung.
check_stalled_answers() {
    python3 - "$NODE2" "$((REQUEST_TIMEOUT_MS + SLACK_MS))" "$TMP/answers.stall" <<'EOF' ||
import json, sys
node, limit, bad = sys.argv[1], int(sys.argv[2]), 0
for line in open(sys.argv[3]):
    url, code, ms, body = (line.rstrip("\n").split(" ", 3) + [""])[:4]
    if url != node:
        continue
    try:
        err = json.loads(body)
        clear = err["error"] and err["message"]
    except (ValueError, KeyError, TypeError):
        clear = False
    if code != "503" or int(ms) > limit or not clear:
        print(f"stalled node answered {code} after {ms} ms (limit {limit}): {body}")
        bad += 1
sys.exit(1 if bad else 0)
EOF
        FAILED+=("stall: node 2 did not fail its calls within the request timeout (above)")
}

# check_acked PHASE: every acknowledged key is in the store's body.
check_acked() {
    curl -sf --max-time 10 "$NODE1/v1/collections/c/export" >"$TMP/export"
    python3 - "$TMP/export" "$TMP/acked" <<'EOF' || FAILED+=("$1: acknowledged writes missing from the store (above)")
import json, sys
keys = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "id" in r:
        keys[r["id"]] = r["data"]["items"]
        if r["v"] != len(r["data"]["items"]) + 1:
            print(f'{r["id"]}: v{r["v"]} holds {len(r["data"]["items"])} keys')
            sys.exit(1)
lost = [l.split() for l in open(sys.argv[2]) if l.split()[1] not in keys.get(l.split()[0], {})]
for d, k in lost[:20]:
    print(f"acknowledged {d} {k} is not in the store")
sys.exit(1 if lost else 0)
EOF
}

# check_streams PHASE: waits (bounded) for the watchers to reach the bus's
# last seq and to hold every version the store committed (a version whose
# publish failed comes from the outbox a few seconds later), then checks
# them against FerretDB.
check_streams() {
    local seq
    seq=$(curl -s --max-time 5 "$NODE1/v1/collections/c/docs?limit=1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
    for _ in $(seq 300); do
        "$CHECK" reached "$seq" "$TMP/w1" "$TMP/w2" "$TMP/w3" && break
        sleep 0.05
    done
    for _ in $(seq 30); do
        "$CHECK" check "$MONGO_URI" syncd c "$TMP/w1" "$TMP/w2" "$TMP/w3" \
            >/dev/null 2>&1 && break
        sleep 0.5
    done
    "$CHECK" check "$MONGO_URI" syncd c "$TMP/w1" "$TMP/w2" "$TMP/w3" ||
        FAILED+=("$1: watcher streams break the every-version contract (above)")
}

all_toxic() {
    local p
    for p in "${ALL_PROXIES[@]}"; do
        toxic "$p" "$1-down" "$1" downstream "$2"
        toxic "$p" "$1-up" "$1" upstream "$2"
    done
}

all_untoxic() {
    local p
    for p in "${ALL_PROXIES[@]}"; do
        untoxic "$p" "$1-down"
        untoxic "$p" "$1-up"
    done
}

latency_on() { all_toxic latency '{"latency":50,"jitter":20}'; }
latency_off() { all_untoxic latency; }
bandwidth_on() { all_toxic bandwidth '{"rate":8}'; }
bandwidth_off() { all_untoxic bandwidth; }

stall_on() {
    local i t0 code
    toxic mongo2 stall-down timeout downstream '{"timeout":0}'
    toxic mongo2 stall-up timeout upstream '{"timeout":0}'
    toxic redis2 stall-down timeout downstream '{"timeout":0}'
    toxic redis2 stall-up timeout upstream '{"timeout":0}'
    # Reads the node has not cached go to the stalled store too.
    for i in 1 2; do
        t0=$(now_ms)
        code=$(curl -s -o "$TMP/probe" -w '%{http_code}' --max-time 30 \
            "$NODE2$(doc "absent-$i")" || true)
        echo "$NODE2 $code $(($(now_ms) - t0)) $(cat "$TMP/probe")" >>"$TMP/answers.stall"
    done
}
stall_off() {
    untoxic mongo2 stall-down
    untoxic mongo2 stall-up
    untoxic redis2 stall-down
    untoxic redis2 stall-up
}

halfopen_on() {
    toxic mongo3 half timeout downstream '{"timeout":0}'
    toxic redis3 half timeout downstream '{"timeout":0}'
}
halfopen_off() {
    untoxic mongo3 half
    untoxic redis3 half
}

partition_on() { enable redis1 false; }
partition_off() { enable redis1 true; }

phase latency 4 latency_on latency_off
phase bandwidth 4 bandwidth_on bandwidth_off
phase stall 6 stall_on stall_off
phase halfopen 6 halfopen_on halfopen_off
phase partition 20 partition_on partition_off

# Every body a reader was served is the store's body at that version.
# Version 1 holds no key and version v adds one, so the store's version v
# holds the keys that versions 2..v added, with the values the last version
# (the export) holds. The first watcher's stream (checked against the store
# above) names the key of each version whose event carries its patch; an
# event the outbox published carries none (an invalidate). So a body served
# as version v must hold v - 1 keys, with the store's values, every key
# named for versions up to v and none named for a later one; and every node
# must have served the same body as version v.
python3 - "$TMP/export" "$TMP/w1" "$TMP"/samples.* <<'EOF' ||
import json, sys
final, added = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "id" in r:
        final[r["id"]] = r["data"]["items"]
for line in open(sys.argv[2]):
    ev = json.loads(line)
    p = ev["patch"] or []
    if ev["v"] > 1 and len(p) == 1 and p[0]["op"] == "add" and p[0]["path"].startswith("/items/"):
        added.setdefault(ev["id"], {})[ev["v"]] = p[0]["path"][len("/items/"):]

def fits(doc, v, body):
    items = body.get("items")
    if set(body) != {"items"} or len(items) != v - 1 or doc not in final:
        return False
    if any(final[doc].get(k) != val for k, val in items.items()):
        return False
    named = added.get(doc, {})
    return all((k in items) == (u <= v) for u, k in named.items())

bad = n = 0
served = {}
for f in sys.argv[3:]:
    for line in open(f):
        node, doc, v, text = line.rstrip("\n").split(" ", 3)
        n += 1
        body = json.loads(text)
        if not fits(doc, int(v), body) or served.setdefault((doc, v), body) != body:
            bad += 1
            if bad <= 10:
                print(f"node {node} served {doc} v{v} as {text[:200]}, which the store never had at v{v}")
named = sum(len(a) for a in added.values())
print(f"test_netfault: {n} bodies served during the faults, {bad} that the store never had ({named} versions named by their events)")
sys.exit(1 if bad else 0)
EOF
    FAILED+=("a node served a version the store never had (above)")

printf 'test_netfault: convergence per fault kind (anti-entropy interval %s ms):\n%s' \
    "$AE_MS" "$RESULTS"
if [ -f "$TMP/answers.stall" ]; then
    echo "test_netfault: answers of the stalled node (node status ms body), first 10:"
    head -n 10 "$TMP/answers.stall"
fi

if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'test_netfault: FAIL: %s\n' "${FAILED[@]}" >&2
    logs
    exit 1
fi
echo "test_netfault: OK"
