#!/usr/bin/env bash
# test_security.sh - secrets, their rotation, credentials and TLS, against
# real servers, checked over HTTP and syncctl only.
#
# Part 1, a three-node cluster (scripts/cluster.sh: FerretDB, Redis, three
# syncd) whose secret and token come from files (--secret-file,
# --token-file; syncctl --token-file), rolled node by node through the
# four stages of a rotation without downtime, under a write storm:
#   1. --secret OLD           --token A
#   2. --secret OLD,NEW       --token A,B   (sign with OLD, accept both)
#   3. --secret NEW,OLD       --token B,A   (sign with NEW, accept both)
#   4. --secret NEW           --token B
# Each node is stopped (SIGTERM) and started again with the next stage's
# files; a stage starts once every node finished the one before (clients
# switch from token A to B once every node accepts B). Then:
# - no write was refused with 401 and no event was dropped: one watcher per
#   node, resumed (--since its last seq) around each restart of its node,
#   holds every version the store committed, once and in seq order
#   (tests/stream_check.c), and every node's
#   syncd_events_dropped_total{reason="signature"} is 0;
# - token A is refused (401) once every node is at stage 4, token B is
#   accepted, and a node at stage 2 accepted both;
# - a node started with --secret and --secret-file, or with an empty key in
#   --secret, exits 2 with a message that names the flags only; syncctl
#   with --token-file of a missing file exits 1 naming it, with both
#   --token and --token-file 2.
#
# Part 2, credentials and TLS: Redis with an ACL user (the default user
# off), reached through a stunnel4 pair (a client tunnel on the node's side,
# a server tunnel on Redis's side), and FerretDB with authentication
# (--test-enable-new-auth, one user) behind a stunnel4 server tunnel,
# reached with mongodb://user:pass@...?tls=true&tlsCAFile=... . Two nodes
# get the URLs from SYNCD_REDIS_URL and SYNCD_MONGO_URI (the Redis password
# percent-encoded, with '@' and '/' in it):
# - both serve, their bus is connected, and a watcher on node B sees the
#   five versions written through node A (seqs 1..5), so events crossed the
#   tunnel; the server tunnel logged connections to both services;
# - a node without --secret logs that anyone who can reach Redis can
#   inject changes; no node of part 1 (which had secrets) does;
# - a wrong Redis password leaves the bus disconnected, and the node logs
#   that Redis refused its credentials; a wrong MongoDB
#   password fails the start (exit 1, "Authentication failed").
#
# Finally no secret, token or password (right or wrong) appears in any log,
# stderr, /metrics, /v1/health, error message or in the process listing
# (`ps -eo args`, taken while everything ran).
#
# Usage: tests/test_security.sh SYNCD SYNCCTL STREAM_CHECK
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
export SYNCD_BIN="${1:?usage: test_security.sh SYNCD SYNCCTL STREAM_CHECK}"
SYNCCTL="${2:?usage: test_security.sh SYNCD SYNCCTL STREAM_CHECK}"
CHECK="${3:?usage: test_security.sh SYNCD SYNCCTL STREAM_CHECK}"
FERRETDB="${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}"
TMP="$(mktemp -d /tmp/syncd-test-security-XXXXXX)"
export SYNCD_CLUSTER_DIR="$TMP/cluster"
CLUSTER="$ROOT/scripts/cluster.sh"
OUT="$TMP/out" # everything the processes printed or answered
mkdir -p "$OUT"
PIDS=() # processes of part 2 and the writer, stopped by PID

cleanup() {
    local p
    touch "$TMP/stop"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "$TMP"/w*.pid; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
    done
    "$CLUSTER" stop >/dev/null 2>&1 || true
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    local f
    echo "test_security: FAIL: $*" >&2
    for f in "$SYNCD_CLUSTER_DIR"/node*/syncd.log "$OUT"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        tail -n 15 "$f" >&2 || true
    done
    exit 1
}

now_ms() { date +%s%3N; }

# until_true MS CMD...: runs CMD every 100 ms until it succeeds (0) or MS
# milliseconds have passed (1).
until_true() {
    local deadline=$(($(now_ms) + $1))
    shift
    while :; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

rand() { openssl rand -hex 12; }

# ---- Part 1: secrets from files, rotated node by node ---------------------

OLD="old-secret-$(rand)"
NEW="new-secret-$(rand)"
TA="token-a-$(rand)"
TB="token-b-$(rand)"
umask 077
printf '%s\n' "$OLD" >"$TMP/secret.1"
printf '%s,%s\n' "$OLD" "$NEW" >"$TMP/secret.2"
printf '%s,%s\n' "$NEW" "$OLD" >"$TMP/secret.3"
printf '%s\n' "$NEW" >"$TMP/secret.4"
printf '%s\n' "$TA" >"$TMP/token.1"
printf '%s,%s\n' "$TA" "$TB" >"$TMP/token.2"
printf '%s,%s\n' "$TB" "$TA" >"$TMP/token.3"
printf '%s\n' "$TB" >"$TMP/token.4"
printf '%s\n' "$TA" >"$TMP/client-token"
# curl reads the header from a file, so that no token is in its arguments.
printf 'Authorization: Bearer %s\n' "$TA" >"$TMP/header.A"
printf 'Authorization: Bearer %s\n' "$TB" >"$TMP/header.B"
cp "$TMP/header.A" "$TMP/client-header"
umask 022

stage_args() {
    echo "--heartbeat-interval 1s --anti-entropy-interval 2s --log-level info" \
        "--secret-file $TMP/secret.$1 --token-file $TMP/token.$1"
}

SYNCD_CLUSTER_ARGS="$(stage_args 1)" "$CLUSTER" start >/dev/null
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES=("$NODE1" "$NODE2" "$NODE3")

# code URL A|B: the status of GET URL/v1/collections/rot/docs with token A
# or B.
code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        -H "@$TMP/header.$2" "$1/v1/collections/rot/docs" || true
}

# The write storm: PUTs of five documents, round robin over the nodes, with
# the client token of the moment; every status is kept.
writer() {
    local i=0 url
    while [ ! -e "$TMP/stop" ]; do
        i=$((i + 1))
        url="${NODES[$((i % 3))]}"
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 -X PUT \
            -H "@$TMP/client-header" \
            -d "{\"i\":$i}" "$url/v1/collections/rot/docs/d$((i % 5))" \
            >>"$TMP/writes" 2>/dev/null || echo 000 >>"$TMP/writes"
    done
}

# watch_segment N: starts the next segment of node N's watcher, from the
# last seq of its previous segment (0 for the first).
declare -A SEGS
watch_segment() {
    local n="$1" url since=0 seg
    url="NODE$n"
    seg=$((${SEGS[$n]:-0} + 1))
    if [ "$seg" -gt 1 ]; then
        since=$("$CHECK" last "$TMP/w$n.$((seg - 1))")
    fi
    SEGS[$n]=$seg
    "$SYNCCTL" --server "${!url}" --token-file "$TMP/client-token" \
        watch rot --since "$since" >"$TMP/w$n.$seg" 2>>"$OUT/watch$n.err" &
    echo $! >"$TMP/w$n.pid"
}

# restart N STAGE: stops node N's watcher and node N (SIGTERM), starts the
# node with the files of STAGE and resumes its watcher.
restart() {
    local n="$1" pid
    kill "$(cat "$TMP/w$n.pid")" 2>/dev/null || true
    wait "$(cat "$TMP/w$n.pid")" 2>/dev/null || true
    pid=$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")
    kill -TERM "$pid"
    until_true 20000 bash -c "! kill -0 $pid" || fail "node $n did not stop on SIGTERM"
    SYNCD_CLUSTER_ARGS="$(stage_args "$2")" "$CLUSTER" start-node "$n" >/dev/null
    watch_segment "$n"
}

for n in 1 2 3; do watch_segment "$n"; done
writer &
PIDS+=($!)
sleep 1
ps -eo args >"$OUT/ps.1"
for stage in 2 3 4; do
    for n in 1 2 3; do
        restart "$n" "$stage"
        sleep 0.5
        if [ "$stage" = 2 ] && [ "$n" = 1 ]; then
            [ "$(code "$NODE1" A)" = 200 ] && [ "$(code "$NODE1" B)" = 200 ] ||
                fail "node 1 at stage 2 (--token A,B) refused token A or B"
        fi
    done
    # Every node accepts token B from stage 2 on: clients switch to it.
    if [ "$stage" = 2 ]; then
        printf '%s\n' "$TB" >"$TMP/client-token"
        cp "$TMP/header.B" "$TMP/client-header"
    fi
    ps -eo args >"$OUT/ps.$stage"
done
sleep 1
touch "$TMP/stop"
wait "${PIDS[0]}"
PIDS=()

grep -q 401 "$TMP/writes" && fail "a write was refused with 401 during the rotation"
ok=$(grep -c '^20[01]$' "$TMP/writes" || true)
[ "$ok" -ge 50 ] || fail "only $ok writes succeeded during the rotation"
for n in 1 2 3; do
    url="NODE$n"
    [ "$(code "${!url}" A)" = 401 ] || fail "node $n at stage 4 accepts the retired token A"
    [ "$(code "${!url}" B)" = 200 ] || fail "node $n at stage 4 refuses token B"
done

seq=$(curl -sf -H "@$TMP/header.B" "$NODE1/v1/collections/rot/docs?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
streams=()
for n in 1 2 3; do
    s="$TMP/w$n.1"
    for k in $(seq 2 "${SEGS[$n]}"); do s="$s+$TMP/w$n.$k"; done
    streams+=("$s")
done
until_true 30000 "$CHECK" reached "$seq" "${streams[@]}" ||
    fail "the watchers did not reach seq $seq"
"$CHECK" check "$MONGO_URI" syncd rot "${streams[@]}" ||
    fail "a watcher missed or repeated a version during the rotation (above)"
for n in 1 2 3; do
    url="NODE$n"
    curl -sf -H "@$TMP/header.B" "${!url}/metrics" >"$OUT/metrics$n"
    curl -sf "${!url}/v1/health" >"$OUT/health$n"
    grep -qx 'syncd_events_dropped_total{reason="signature"} 0' "$OUT/metrics$n" ||
        fail "node $n dropped events for their signature: $(grep signature "$OUT/metrics$n")"
done
echo "test_security: rotation: $ok writes, seq $seq, every watcher saw every version, no signature drop (${SECONDS}s)"

# Bad secret settings: the message names the flags, never the value.
set +e
"$SYNCD_BIN" --secret "$OLD" --secret-file "$TMP/secret.1" --data-dir "$TMP/bad" \
    >"$OUT/bad1.log" 2>&1
rc1=$?
"$SYNCD_BIN" --secret "$OLD,,$NEW" --data-dir "$TMP/bad" >"$OUT/bad2.log" 2>&1
rc2=$?
"$SYNCCTL" --server "$NODE1" --token "$TA" ls rot >/dev/null 2>"$OUT/bad3.log"
rc3=$?
"$SYNCCTL" --server "$NODE1" --token-file "$TMP/none" ls rot >/dev/null 2>"$OUT/bad4.log"
rc4=$?
"$SYNCCTL" --server "$NODE1" --token x --token-file "$TMP/token.4" ls rot >/dev/null 2>"$OUT/bad5.log"
rc5=$?
set -e
[ "$rc1" = 2 ] && grep -q -- '--secret and --secret-file' "$OUT/bad1.log" ||
    fail "--secret with --secret-file: exit $rc1, $(cat "$OUT/bad1.log")"
[ "$rc2" = 2 ] && grep -q -- '--secret: empty key' "$OUT/bad2.log" ||
    fail "--secret with an empty key: exit $rc2, $(cat "$OUT/bad2.log")"
[ "$rc3" = 1 ] || fail "syncctl with a retired token exited $rc3"
[ "$rc4" = 1 ] && grep -q -- "--token-file: cannot read '$TMP/none'" "$OUT/bad4.log" ||
    fail "syncctl --token-file of a missing file: exit $rc4, $(cat "$OUT/bad4.log")"
[ "$rc5" = 2 ] || fail "syncctl with --token and --token-file exited $rc5, want 2"
cp "$SYNCD_CLUSTER_DIR"/node1/syncd.log "$OUT/cluster-node1.log"
cp "$SYNCD_CLUSTER_DIR"/node2/syncd.log "$OUT/cluster-node2.log"
cp "$SYNCD_CLUSTER_DIR"/node3/syncd.log "$OUT/cluster-node3.log"
if grep -l 'anyone who can reach Redis' "$OUT"/cluster-node*.log; then
    fail "a node with --secret warned that it has none"
fi
"$CLUSTER" stop >/dev/null

# ---- Part 2: Redis ACL and MongoDB authentication, through TLS tunnels ----

RPASS="p@ss/$(rand)" # '@' and '/' percent-encoded in the URL
RPASS_URL="p%40ss%2F${RPASS#p@ss/}"
MPASS="mongo-pw-$(rand)"
WRONG="wrong-pw-$(rand)"
TLS="$TMP/tls"
mkdir -p "$TLS" "$TMP/redis" "$TMP/fdb" "$TMP/fdb-state"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$TLS/key.pem" \
    -out "$TLS/cert.pem" 2>/dev/null || fail "openssl cannot make a certificate"
# Redis, its server tunnel, the node's client tunnel; FerretDB, its server
# tunnel: distinct ports (chosen together).
read -r RP RS RC MP MS <<<"$(free_ports 5)"

redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$TMP/redis/pid" --logfile "$TMP/redis/log" \
    --dir "$TMP/redis"
until_true 10000 redis-cli -p "$RP" ping || fail "redis did not start"
PIDS+=("$(cat "$TMP/redis/pid")")
# On redis-cli's input, not its arguments: the password stays out of ps.
printf 'ACL SETUSER syncd on >%s ~syncd:* &syncd:* +@all\nACL SETUSER default off\n' \
    "$RPASS" | redis-cli -p "$RP" >/dev/null
[ "$(redis-cli -p "$RP" ping 2>&1)" != PONG ] || fail "redis still serves the default user"

FERRETDB_SETUP_PASSWORD="$MPASS" "$FERRETDB" --handler=sqlite --sqlite-url="file:$TMP/fdb/" \
    --listen-addr="127.0.0.1:$MP" --state-dir="$TMP/fdb-state" \
    --telemetry=disable --log-level=warn --debug-addr=- \
    --test-enable-new-auth --setup-database=syncd --setup-username=alice \
    >"$TMP/ferretdb.log" 2>&1 &
PIDS+=($!)
until_true 20000 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MP" || fail "FerretDB did not start"

cat >"$TLS/server.conf" <<EOF
foreground = yes
pid =
output = $OUT/stunnel-server.log
debug = info
[redis]
accept = 127.0.0.1:$RS
connect = 127.0.0.1:$RP
cert = $TLS/cert.pem
key = $TLS/key.pem
[mongo]
accept = 127.0.0.1:$MS
connect = 127.0.0.1:$MP
cert = $TLS/cert.pem
key = $TLS/key.pem
EOF
cat >"$TLS/client.conf" <<EOF
foreground = yes
pid =
output = $OUT/stunnel-client.log
[redis]
client = yes
accept = 127.0.0.1:$RC
connect = 127.0.0.1:$RS
CAfile = $TLS/cert.pem
verifyChain = yes
checkIP = 127.0.0.1
EOF
stunnel "$TLS/server.conf" >/dev/null 2>&1 &
PIDS+=($!)
stunnel "$TLS/client.conf" >/dev/null 2>&1 &
PIDS+=($!)
until_true 10000 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RC" || fail "stunnel did not start"

REDIS_URL_OK="redis://syncd:$RPASS_URL@127.0.0.1:$RC/"
MONGO_URI_OK="mongodb://alice:$MPASS@127.0.0.1:$MS/?authSource=syncd&tls=true&tlsCAFile=$TLS/cert.pem"

# node NAME REDIS_URL MONGO_URI: starts a node with the URLs in its
# environment; its port in $OUT/NAME.port, its log in $OUT/NAME.log.
node() {
    local port
    port=$(free_port)
    echo "$port" >"$OUT/$1.port"
    SYNCD_REDIS_URL="$2" SYNCD_MONGO_URI="$3" "$SYNCD_BIN" \
        --listen "127.0.0.1:$port" --data-dir "$TMP/$1" --node-id "$1" \
        --heartbeat-interval 1s >"$OUT/$1.log" 2>&1 &
    PIDS+=($!)
}
connected() {
    curl -sf "http://127.0.0.1:$(cat "$OUT/$1.port")/v1/health" |
        grep -q '"bus_connected":true'
}

node a "$REDIS_URL_OK" "$MONGO_URI_OK"
node b "$REDIS_URL_OK" "$MONGO_URI_OK"
node c "redis://syncd:$WRONG@127.0.0.1:$RC/" "$MONGO_URI_OK"
A="http://127.0.0.1:$(cat "$OUT/a.port")"
B="http://127.0.0.1:$(cat "$OUT/b.port")"
echo "test_security: part 2 servers up (${SECONDS}s)"
until_true 30000 connected a || fail "node a: bus not connected through the tunnel with the ACL user"
until_true 30000 connected b || fail "node b: bus not connected through the tunnel with the ACL user"
echo "test_security: part 2 nodes connected (${SECONDS}s)"
"$SYNCCTL" --server "$B" watch tls --since 0 >"$TMP/wtls" 2>"$OUT/wtls.err" &
echo $! >"$TMP/wtls.pid"
for v in 1 2 3 4 5; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d "{\"v\":$v}" \
        "$A/v1/collections/tls/docs/x")
    [ "$c" = 201 ] || [ "$c" = 200 ] || fail "write $v through node a answered $c"
done
five() { [ "$(wc -l <"$TMP/wtls")" -ge 5 ]; }
until_true 20000 five || fail "node b's watcher saw $(wc -l <"$TMP/wtls") of 5 events"
python3 - "$TMP/wtls" <<'EOF' || fail "node b's watcher did not see versions 1..5 at seqs 1..5"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])][:5]
sys.exit(0 if [(e["seq"], e["v"]) for e in evs] == [(i, i) for i in range(1, 6)] else 1)
EOF
grep -q 'Service \[redis\] accepted connection' "$OUT/stunnel-server.log" ||
    fail "no connection went through the Redis server tunnel"
grep -q 'Service \[mongo\] accepted connection' "$OUT/stunnel-server.log" ||
    fail "no connection went through the MongoDB server tunnel"
grep -q 'no --secret: events on the bus are not signed, so anyone who can reach Redis can inject changes' \
    "$OUT/a.log" || fail "node a without --secret did not warn"
sleep 2
connected c && fail "node c's bus connected with a wrong Redis password"
grep -q 'Redis refused the user and password of --redis-url' "$OUT/c.log" ||
    fail "node c did not log that Redis refused its credentials"
set +e
SYNCD_MONGO_URI="mongodb://alice:$WRONG@127.0.0.1:$MS/?authSource=syncd&tls=true&tlsCAFile=$TLS/cert.pem" \
    "$SYNCD_BIN" --listen 127.0.0.1:0 --data-dir "$TMP/d" >"$OUT/d.log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] && grep -q 'Authentication failed' "$OUT/d.log" ||
    fail "a wrong MongoDB password: exit $rc, $(cat "$OUT/d.log")"
ps -eo args >"$OUT/ps.tls"
for x in a b c; do
    p=$(cat "$OUT/$x.port")
    curl -sf "http://127.0.0.1:$p/metrics" >"$OUT/metrics-$x"
    curl -sf "http://127.0.0.1:$p/v1/health" >"$OUT/health-$x"
done
echo "test_security: TLS tunnels, Redis ACL and MongoDB authentication work (${SECONDS}s)"

# ---- No secret anywhere ----------------------------------------------------
kill "$(cat "$TMP/wtls.pid")" 2>/dev/null || true
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
for s in "$OLD" "$NEW" "$TA" "$TB" "$RPASS" "$RPASS_URL" "$MPASS" "$WRONG"; do
    if grep -rlF -- "$s" "$OUT"; then
        fail "a secret appears in the outputs above"
    fi
done
echo "test_security: OK (no secret in $(ls "$OUT" | wc -l) logs, answers and process listings)"
