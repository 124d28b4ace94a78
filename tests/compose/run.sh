#!/usr/bin/env bash
# run.sh - the compose cluster of docker-compose.yml tested for real in a
# Docker engine: the image built from the Dockerfile, MongoDB, Redis, three
# syncd nodes and the nginx balancer, driven from the host with syncctl
# through the balancer and the node ports.
#
#   tests/compose/run.sh [SYNCCTL]     (default: build/syncd/syncctl)
#
# Images: the syncd image is built from the Dockerfile (the build cache
# makes a rebuild cheap). Where mongo:7, redis:7 or nginx:1.27 (or the
# images SYNCD_MONGO_IMAGE, SYNCD_REDIS_IMAGE, SYNCD_LB_IMAGE name) are
# neither present nor pullable, local stand-ins are built from
# tests/compose/standins/ (FerretDB from .tools/bin, Debian's redis-server
# and nginx) on a Debian base image that scripts/base-image.sh makes with
# debootstrap when no registry answers, and are passed to the compose file
# through those variables. SYNCD_COMPOSE_RMI=1 removes the images this run
# built when it ends; SYNCD_COMPOSE="docker compose" picks Compose v2
# (default: docker-compose, else docker compose).
#
# The cluster runs as a compose project of its own (syncd-compose-<pid>)
# with a generated env file (random secret and token). Host ports are the
# compose defaults (7070..7073) when free, else other free ones. Whatever
# happens, the project's containers, volumes and network are removed at
# the end.
#
# Checks (issue 9 section 5; DESIGN.md sections 4, 5 and 10):
#  - documents created, patched (both patch types) and deleted through the
#    balancer; three watchers (`syncctl watch c --since 0`) through the
#    balancer, which lands them on different nodes;
#  - phase "kill": 6 clients (two per document) add distinct keys with
#    JSON Patch and no If-Match through the balancer, counting the adds
#    acknowledged; syncctl sends an add again with its Idempotency-Key
#    when the balancer answers 502 or a node 503, so no add may end with
#    one (a conflict the store gave up on is not acknowledged, and fine);
#    mid-storm one syncd container is frozen until requests wait on it (so
#    that writes are in flight on it), `docker kill`ed and comes back (its
#    restart policy, else `docker start`);
#  - phase "rolling": the same storm while each node in turn is restarted
#    (`docker restart`: SIGTERM, then start) and becomes healthy again;
#  - phase "redis": the same storm while the redis container restarts;
#  - phase "pause": the same storm while one node is `docker pause`d for
#    more than three heartbeat intervals: another node's /v1/nodes
#    (`syncctl nodes`) drops it and its syncd_nodes_live says 2, and it is
#    listed again after `docker unpause`;
#  - after each phase: every node serves every document at the same
#    version with the same body, holding every acknowledged key;
#    `syncctl verify c --nodes` (node ports) exits 0, and so does
#    `syncctl verify c` over the three URLs the nodes advertise in
#    /v1/nodes; every watcher saw every version of every document (1..the
#    final one) exactly once, in order, with seqs 1, 2, 3, ... and the
#    same event under each seq; the time from the healed fault (and the
#    storm's end) until every node agreed is printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
SYNCCTL="${1:-$ROOT/build/syncd/syncctl}"
[ -x "$SYNCCTL" ] || { echo "compose: no syncctl at $SYNCCTL" >&2; exit 2; }
SYNCCTL="$(cd "$(dirname "$SYNCCTL")" && pwd)/$(basename "$SYNCCTL")"

PROJECT="syncd-compose-$$"
TMP="$(mktemp -d /tmp/syncd-compose-XXXXXX)"
KEYS="${SYNCD_COMPOSE_KEYS:-20}" # adds per client and phase
HEARTBEAT_S=1                     # the nodes' --heartbeat-interval, seconds
SYNCD_IMAGE_TAG="syncd-compose-test:latest"
BUILT_IMAGES=()
BG=()
PAUSED=""

if [ -n "${SYNCD_COMPOSE:-}" ]; then
    read -r -a DC <<<"$SYNCD_COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then
    DC=(docker-compose)
else
    DC=(docker compose)
fi

log() { echo "compose: $*"; }

compose() {
    "${DC[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" \
        --env-file "$TMP/env" "$@"
}

cid() { compose ps -q "$1"; }

cleanup() {
    local rc=$? p
    set +e
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ -f "$TMP/env" ]; then
        if [ "$rc" -ne 0 ]; then
            compose ps
            compose logs --no-color --tail 30
        fi
        [ -n "$PAUSED" ] && docker unpause "$PAUSED" >/dev/null
        compose down -v --remove-orphans -t 5
    fi
    if [ "${SYNCD_COMPOSE_RMI:-0}" = 1 ] && [ ${#BUILT_IMAGES[@]} -gt 0 ]; then
        docker rmi "${BUILT_IMAGES[@]}" >/dev/null
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "compose: FAIL: $*" >&2
    exit 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- Images ----------------------------------------------------------------

# image VAR DEFAULT STANDIN CONTEXT: sets VAR to the real image when it is
# present or can be pulled, else to a stand-in built from
# standins/STANDIN.Dockerfile with CONTEXT.
image() {
    local var="$1" want="${!1:-$2}" standin="$3" context="$4" tag
    if docker image inspect "$want" >/dev/null 2>&1 ||
        timeout 120 docker pull -q "$want" >/dev/null 2>&1; then
        printf -v "$var" %s "$want"
        log "$var=$want"
        return
    fi
    tag="syncd-standin-$standin:latest"
    log "$want cannot be pulled: building the stand-in $tag"
    nice -n 10 docker build -q --network host -t "$tag" \
        -f "$ROOT/tests/compose/standins/$standin.Dockerfile" "$context" \
        >/dev/null
    BUILT_IMAGES+=("$tag")
    printf -v "$var" %s "$tag"
}

T0=$(now)
"$ROOT/scripts/base-image.sh"
[ -x "$ROOT/.tools/bin/ferretdb" ] || "$ROOT/scripts/setup.sh"
log "building the syncd image from the Dockerfile"
nice -n 10 docker build -q --network host -t "$SYNCD_IMAGE_TAG" "$ROOT" >/dev/null
BUILT_IMAGES+=("$SYNCD_IMAGE_TAG")
log "image $SYNCD_IMAGE_TAG: $(docker image inspect -f '{{.Size}}' "$SYNCD_IMAGE_TAG" |
    awk '{ printf "%.0f MB", $1 / 1e6 }')"
image SYNCD_MONGO_IMAGE mongo:7 mongo "$ROOT/.tools/bin"
image SYNCD_REDIS_IMAGE redis:7 redis "$ROOT/tests/compose/standins"
image SYNCD_LB_IMAGE nginx:1.27 nginx "$ROOT/tests/compose/standins"
log "images ready in $(since "$T0") s"

# ---- The cluster -----------------------------------------------------------

port_free() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null
}
PORTS=(7070 7071 7072 7073)
for p in "${PORTS[@]}"; do
    if ! port_free "$p"; then
        read -r -a PORTS <<<"$(free_ports 4)"
        break
    fi
done
TOKEN="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
cat >"$TMP/env" <<EOF
SYNCD_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
SYNCD_TOKEN=$TOKEN
SYNCD_PORT=${PORTS[0]}
SYNCD_NODE1_PORT=${PORTS[1]}
SYNCD_NODE2_PORT=${PORTS[2]}
SYNCD_NODE3_PORT=${PORTS[3]}
SYNCD_HEARTBEAT_INTERVAL=${HEARTBEAT_S}s
SYNCD_IMAGE=$SYNCD_IMAGE_TAG
SYNCD_MONGO_IMAGE=$SYNCD_MONGO_IMAGE
SYNCD_REDIS_IMAGE=$SYNCD_REDIS_IMAGE
SYNCD_LB_IMAGE=$SYNCD_LB_IMAGE
EOF
LB="http://127.0.0.1:${PORTS[0]}"
NODES=("http://127.0.0.1:${PORTS[1]}" "http://127.0.0.1:${PORTS[2]}"
    "http://127.0.0.1:${PORTS[3]}")
NODE_LIST="$(
    IFS=,
    echo "${NODES[*]}"
)"

T0=$(now)
log "project $PROJECT: balancer $LB, nodes $NODE_LIST (${DC[*]})"
compose up -d --no-build
# up returns once the nodes' dependencies are healthy; wait for all.
healthy() {
    local c s
    for c in $(compose ps -q); do
        s=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c")
        [ "$s" = healthy ] || return 1
    done
}
for _ in $(seq 120); do
    healthy && break
    sleep 1
done
healthy || fail "the cluster did not become healthy"
log "cluster healthy in $(since "$T0") s"

ctl() { "$SYNCCTL" --token "$TOKEN" "$@"; }

# status URL METHOD [BODY [CONTENT_TYPE]]: the HTTP status of a request.
status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X "$2" \
        -H "Authorization: Bearer $TOKEN" \
        -H "Content-Type: ${4:-application/json}" ${3:+-d "$3"} "$1"
}

# ---- Documents, watches ----------------------------------------------------

code="$(curl -s -o /dev/null -w '%{http_code}' "$LB/v1/collections/c/docs/d1")"
[ "$code" = 401 ] || fail "a request without the token answered $code, not 401"
DOCS=(d1 d2 d3)
for d in "${DOCS[@]}"; do
    echo '{"items":{}}' | ctl --server "$LB" put c "$d" >/dev/null ||
        fail "create of $d through the balancer"
done
code="$(status "$LB/v1/collections/c/docs/gone" PUT '{"a":1}')"
code="$code $(status "$LB/v1/collections/c/docs/gone" PATCH '{"a":2}' \
    application/merge-patch+json)"
code="$code $(status "$LB/v1/collections/c/docs/gone" PATCH \
    '[{"op":"add","path":"/b","value":3}]' application/json-patch+json)"
code="$code $(status "$LB/v1/collections/c/docs/gone" DELETE)"
[ "$code" = "201 200 200 200" ] || fail "create, patch, patch, delete answered $code"
FINAL_GONE=4

WATCHERS=(wa wb wc)
for w in "${WATCHERS[@]}"; do
    ctl --server "$LB" watch c --since 0 >"$TMP/$w" 2>"$TMP/$w.err" &
    BG+=($!)
done

# client PHASE I DOC: KEYS adds of distinct keys to DOC through the
# balancer; each acknowledged key goes into $TMP/acked.DOC.
client() {
    local k key
    for k in $(seq "$KEYS"); do
        key="$1$2-$k"
        if echo "[{\"op\":\"add\",\"path\":\"/items/$key\",\"value\":$k}]" |
            ctl --server "$LB" patch c "$3" >/dev/null 2>>"$TMP/client.err"; then
            echo "$key" >>"$TMP/acked.$3.$2"
        fi
    done
}

# storm PHASE: 6 clients in the background, two per document; their pids
# go into CLIENTS.
storm() {
    local i
    CLIENTS=()
    STORM_T0=$(now)
    for i in 1 2 3 4 5 6; do
        client "$1" "$i" "${DOCS[$(((i - 1) / 2))]}" &
        CLIENTS+=($!)
        BG+=($!)
    done
}

# storm_wait PHASE: waits for the clients; says how many adds were not
# acknowledged and why (the errors syncctl reported, digits elided).
storm_wait() {
    local p
    for p in "${CLIENTS[@]}"; do wait "$p"; done
    log "$1: the storm of $((6 * KEYS)) adds took $(since "$STORM_T0") s"
    local n
    n=$(grep -c '^syncctl:' "$TMP/client.err" 2>/dev/null || true)
    if [ "${n:-0}" -gt 0 ]; then
        log "$1: $n adds not acknowledged:"
        grep '^syncctl:' "$TMP/client.err" | sed -E 's/[0-9]+/N/g' | sort | uniq -c |
            sort -rn | head -n 5 | sed 's/^/compose:   /'
    fi
    # Anything else syncctl wrote (a sanitizer report, say) is a defect.
    if grep -v '^syncctl:' "$TMP/client.err" 2>/dev/null | grep -q .; then
        grep -v '^syncctl:' "$TMP/client.err" | head -n 40 >&2
        fail "$1: syncctl wrote more than its error lines (above)"
    fi
    mv "$TMP/client.err" "$TMP/errors.$1" 2>/dev/null || : >"$TMP/errors.$1"
    # A node that died or shuts down costs the balancer's 502 or the
    # node's 503; syncctl sends the write again with its Idempotency-Key,
    # so no add may end with one.
    if grep -E '^syncctl: 50[234] ' "$TMP/errors.$1" >&2; then
        fail "$1: adds ended in 502, 503 or 504 (above)"
    fi
}

# wait_healthy SERVICE: waits (bounded) until its container is healthy.
wait_healthy() {
    for _ in $(seq 120); do
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$1")")" = healthy ] &&
            return 0
        sleep 0.5
    done
    fail "$1 is not healthy again"
}

# agree: every node serves every document at the same version (ETag)
# with the same body; the bodies land in $TMP/body.DOC.
agree() {
    local d n i first etag
    for d in "${DOCS[@]}"; do
        first=""
        for i in 0 1 2; do
            n="${NODES[$i]}"
            curl -sf --max-time 5 -H "Authorization: Bearer $TOKEN" \
                -D "$TMP/h" -o "$TMP/b$i" "$n/v1/collections/c/docs/$d" || return 1
            etag=$(tr -d '\r"' <"$TMP/h" | awk 'tolower($1)=="etag:" {print $2}')
            if [ -z "$first" ]; then
                first="$etag"
            elif [ "$etag" != "$first" ] || ! cmp -s "$TMP/b0" "$TMP/b$i"; then
                return 1
            fi
        done
        echo "$first" >"$TMP/v.$d"
        cp "$TMP/b0" "$TMP/body.$d"
    done
}

# converge PHASE T_HEALED: waits (bounded) until the nodes agree, prints
# the time it took from the healed fault and from the storm's end.
converge() {
    local phase="$1" healed="$2" ended
    ended=$(now)
    for _ in $(seq 600); do
        agree && break
        sleep 0.1
    done
    agree || fail "$phase: the nodes do not agree"
    log "$phase: every node agrees $(since "$healed") s after the fault healed," \
        "$(since "$ended") s after the storm ended"
    echo "$phase $(since "$healed") $(since "$ended")" >>"$TMP/times"
}

# check PHASE: the contract after a phase (see the top of this file).
check() {
    local phase="$1" d acked missing seq
    for d in "${DOCS[@]}"; do
        cat "$TMP"/acked."$d".* >"$TMP/acked" 2>/dev/null || : >"$TMP/acked"
        acked=$(wc -l <"$TMP/acked")
        missing=$(python3 -c '
import json, sys
body = json.load(open(sys.argv[1]))
print(sum(1 for k in open(sys.argv[2]).read().split() if k not in body["items"]))
' "$TMP/body.$d" "$TMP/acked")
        [ "$missing" = 0 ] ||
            fail "$phase: $d lacks $missing of its $acked acknowledged keys"
        log "$phase: $d holds all $acked acknowledged keys at version $(cat "$TMP/v.$d")"
    done
    if ! ctl --server "$LB" verify c --nodes "$NODE_LIST" >"$TMP/verify" 2>&1; then
        cat "$TMP/verify" >&2
        fail "$phase: syncctl verify c --nodes exited non-zero"
    fi
    # Without --nodes, verify checks the nodes /v1/nodes lists, at the
    # URLs they advertise (SYNCD_ADVERTISE_URL: their host ports).
    if ! ctl --server "$LB" verify c >"$TMP/verify" 2>"$TMP/verify.err"; then
        cat "$TMP/verify" "$TMP/verify.err" >&2
        fail "$phase: syncctl verify c (the nodes of /v1/nodes) exited non-zero"
    fi
    python3 -c '
import json, sys
urls = sorted(n["url"] for n in json.load(open(sys.argv[1]))["nodes"])
sys.exit(0 if urls == sorted(sys.argv[2].split(",")) else 1)' \
        "$TMP/verify" "$NODE_LIST" ||
        fail "$phase: syncctl verify c did not check the three advertised URLs"
    log "$phase: syncctl verify c (--nodes, and the nodes of /v1/nodes): every node agrees with the store"
    seq=$(curl -sf --max-time 5 -H "Authorization: Bearer $TOKEN" \
        "${NODES[0]}/v1/collections/c/docs?limit=1" | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["seq"])')
    for _ in $(seq 300); do
        streams reached "$seq" && break
        sleep 0.1
    done
    streams check "$seq" ||
        fail "$phase: a watcher broke the every-version contract (above)"
    log "$phase: every watcher saw every version once, in order, seqs 1..$seq"
}

# streams reached SEQ | streams check SEQ: the watchers' streams have
# reached SEQ, or hold the contract against the final versions.
streams() {
    local d finals="gone=$FINAL_GONE"
    for d in "${DOCS[@]}"; do finals="$finals $d=$(cat "$TMP/v.$d")"; done
    python3 - "$1" "$2" "$finals" "${WATCHERS[@]/#/$TMP/}" <<'EOF'
import json, sys

mode, seq, finals, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
final = {k: int(v) for k, v in (f.split("=") for f in finals.split())}
ok, first = True, {}
for path in files:
    events = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                events.append(json.loads(line))
    if mode == "reached":
        if not events or events[-1]["seq"] < seq:
            sys.exit(1)
        continue
    bad = []
    for i, e in enumerate(events):
        if e["seq"] != i + 1:
            bad.append(f"event {i + 1} has seq {e['seq']} (gap or repeat)")
            break
    seen = {}
    for e in events:
        seen.setdefault(e["id"], []).append(e["v"])
        if first.setdefault(e["seq"], (e["id"], e["v"])) != (e["id"], e["v"]):
            bad.append(f"seq {e['seq']} is {e['id']} v{e['v']} here, "
                       f"{first[e['seq']]} in {files[0]}")
    for doc, v in final.items():
        got = seen.get(doc, [])
        if got != list(range(1, v + 1)):
            bad.append(f"{doc}: {len(got)} events for versions 1..{v}, "
                       f"not each once in order (first wrong at index "
                       f"{next((i for i, x in enumerate(got) if x != i + 1), len(got))})")
    if events and events[-1]["seq"] != seq:
        bad.append(f"last seq {events[-1]['seq']}, the bus has {seq}")
    for b in bad:
        print(f"compose: {path}: {b}", file=sys.stderr)
    ok = ok and not bad
sys.exit(0 if ok else 1)
EOF
}

# nodes_has NODE ID: NODE's /v1/nodes (syncctl nodes) lists ID.
nodes_has() {
    ctl --server "$1" nodes |
        python3 -c 'import json,sys; sys.exit(0 if sys.argv[1] in [n["id"] for n in json.load(sys.stdin)["nodes"]] else 1)' "$2"
}

# nodes_live NODE: syncd_nodes_live in NODE's /metrics.
nodes_live() {
    curl -sf --max-time 5 -H "Authorization: Bearer $TOKEN" "$1/metrics" |
        awk '$1 == "syncd_nodes_live" { print $2 }'
}

agree || { sleep 2; agree; } || fail "the nodes do not agree before the storm"
for n in node-1 node-2 node-3; do
    nodes_has "${NODES[0]}" "$n" || fail "/v1/nodes of node 1 does not list $n"
done
[ "$(nodes_live "${NODES[0]}")" = 3 ] ||
    fail "node 1's /metrics has syncd_nodes_live $(nodes_live "${NODES[0]}"), not 3"
log "documents created and patched; /v1/nodes lists the three nodes"

# ---- Phase kill: docker kill a node during the storm -----------------------

T0=$(now)
storm k
sleep 2
victim=$(cid syncd2)
# Frozen first until requests wait on it (bytes unread on its port 7070,
# seen in its network namespace's /proc/PID/net/tcp), so that writes are
# in flight on it when it dies: the balancer then answers them 502.
in_flight() {
    awk 'NR > 1 && $2 ~ /:1B9E$/ && $4 == "01" {
        split($5, q, ":"); if (q[2] != "00000000") n++ } END { print n + 0 }' \
        "/proc/$(docker inspect -f '{{.State.Pid}}' "$victim")/net/tcp"
}
log "kill: docker pause, then docker kill syncd2 during the storm"
docker pause "$victim" >/dev/null
for _ in $(seq 50); do
    [ "$(in_flight)" -gt 0 ] && break
    sleep 0.1
done
log "kill: $(in_flight) requests wait on the frozen syncd2"
docker kill "$victim" >/dev/null
sleep 1
for _ in $(seq 30); do
    [ "$(docker inspect -f '{{.State.Running}}' "$victim")" = true ] && break
    sleep 0.1
done
if [ "$(docker inspect -f '{{.State.Running}}' "$victim")" = true ]; then
    log "kill: syncd2 restarted by its restart policy"
else
    log "kill: syncd2 not restarted by its policy (docker kill counts as a stop); docker start"
    docker start "$victim" >/dev/null
fi
healed=$(now)
storm_wait kill
log "kill: the balancer answered $(compose logs --no-color lb | grep -c '" 502 ') requests 502, syncctl sent them again"
converge kill "$healed"
check kill

# ---- Phase rolling: restart every node in turn during the storm ------------

storm o
sleep 1
for svc in syncd1 syncd2 syncd3; do
    log "rolling: docker restart $svc (SIGTERM) during the storm"
    docker restart -t 10 "$(cid "$svc")" >/dev/null
    wait_healthy "$svc"
done
healed=$(now)
storm_wait rolling
converge rolling "$healed"
check rolling

# ---- Phase redis: restart Redis during the storm ---------------------------

storm r
sleep 2
log "redis: docker restart redis during the storm"
docker restart -t 5 "$(cid redis)" >/dev/null
healed=$(now)
storm_wait redis
converge redis "$healed"
check redis

# ---- Phase pause: docker pause a node past three heartbeat intervals -------

storm p
sleep 2
PAUSED=$(cid syncd3)
log "pause: docker pause syncd3 during the storm"
docker pause "$PAUSED" >/dev/null
paused_at=$(now)
for _ in $(seq $((HEARTBEAT_S * 100))); do
    nodes_has "${NODES[0]}" node-3 || break
    sleep 0.1
done
nodes_has "${NODES[0]}" node-3 &&
    fail "pause: /v1/nodes of node 1 still lists node-3 after $(since "$paused_at") s"
log "pause: node 1's /v1/nodes dropped node-3 after $(since "$paused_at") s"
[ "$(nodes_live "${NODES[0]}")" = 2 ] ||
    fail "pause: node 1's /metrics has syncd_nodes_live $(nodes_live "${NODES[0]}"), not 2"
sleep "$HEARTBEAT_S"
docker unpause "$PAUSED" >/dev/null
PAUSED=""
healed=$(now)
for _ in $(seq $((HEARTBEAT_S * 100))); do
    nodes_has "${NODES[0]}" node-3 && break
    sleep 0.1
done
nodes_has "${NODES[0]}" node-3 ||
    fail "pause: /v1/nodes of node 1 does not list node-3 after the unpause"
log "pause: node-3 listed again $(since "$healed") s after docker unpause"
storm_wait pause
converge pause "$healed"
check pause

log "OK: convergence (phase, s from fault healed, s from storm end):"
sed 's/^/compose:   /' "$TMP/times"
