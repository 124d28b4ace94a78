#!/usr/bin/env bash
# soak.sh - a three-node syncd cluster under mixed load and a fault every
# minute for MINUTES (default 30), then the verdict. Not part of CI or
# scripts/test.sh: run it by hand (bench/README.md, "Soak").
#
# The cluster is scripts/cluster.sh (FerretDB as the store of record, its
# SQLite files kept across its restarts; Redis as the bus), with each
# node's links to Redis and to FerretDB through Toxiproxy proxies of their
# own (redisN, mongoN), as in tests/test_netfault.sh.
#
# Load, the whole time, on a fixed set of collections and documents (so
# that the data stops growing once every document exists, and growth after
# the warm-up is the processes' own):
#   - the Porcupine-checked history of tests/linz: linz_record (6 clients
#     pinned two per node, 3 keys at a time, a new history key every 15 s
#     epoch) in segments of SOAK_LINZ_SEGMENT seconds (default 300), each
#     checked by linzcheck -mode cluster as soon as it ends, so that no
#     single history grows past what the checker can search. Segment s runs
#     on collection linz<(s-1) mod SOAK_LINZ_COLLS + 1> (default 2
#     collections, so a collection rests a whole segment between uses) with
#     `--slots SOAK_LINZ_SLOTS` (default 8): epoch E works on the documents
#     s<E mod 8>-k0..k2, 24 per collection, each reset to a known value and
#     agreed on by every node before its epoch, a state the checker starts
#     the epoch's history from (an "init" operation, tests/linz/record.c).
#     SOAK_LINZ_SLOTS=0 SOAK_LINZ_COLLS=0 is the old load: fresh documents
#     every epoch and a new collection every segment (linz1, linz2, ...);
#   - SOAK_PATCHERS clients (default 4, spread over the nodes) sending JSON
#     Patches and merge patches to 16 documents of collection "soak", each
#     to one of 32 members of "items" or "m" (a bounded set of keys);
#   - SOAK_READERS readers (default 3, one per node) reading documents and
#     listing the collection;
#   - SOAK_WATCHERS watcher chains (default 3): `syncctl watch soak` on a
#     random node for a random 10 to 60 s, stopped, then started again on
#     another random node from the last seq it printed, and so on.
#
# Faults, one every SOAK_FAULT_INTERVAL seconds (default 60), rotating
# through the kinds named in SOAK_FAULTS (a comma list, default all five:
# kill,stop,redis,mongo,partition; e.g. stop,redis,mongo,partition leaves
# SIGKILL out so that every node lives the whole run) while the node
# rotates through 1..3:
#   kill       SIGKILL node N, start it again
#   stop       SIGSTOP node N for 5 s, then SIGCONT
#   redis      Redis stopped and started again, its data (the replay log)
#              kept as a persistent Redis keeps it
#   mongo      FerretDB stopped and started again (its data kept)
#   partition  node N's Redis proxy disabled for 20 s, then enabled
#
# The nodes run with `--event-log-len SOAK_EVENT_LOG_LEN` (default 2000,
# appended to SOAK_NODE_ARGS): each collection's replay log in Redis is
# bounded by that many events, and at the load's rate (about 7 events a
# second on "soak", 20 on the linz collection in use) every log reaches
# its bound within the first 7 minutes, so inside the warm-up of a run of
# 45 minutes or more. It still holds minutes of events, far more than a
# watcher's resume or a node's catch-up after a 20 s partition needs.
#
# A sampler writes a row every 10 s into bench/soak/NAME.csv (NAME is
# SOAK_NAME, default soak): each process's RSS (kB) and open fds (three
# syncd nodes, Redis, FerretDB), the fault under way, each process's PID,
# Redis's used_memory (kB, INFO memory), the entries of all replay logs,
# the fields of all "pubv" hashes (one per document ever published in a
# collection) and its key count, and each node's syncd_cache_bytes (kB),
# syncd_cache_entries, heap in use and free (kB, syncd_heap_bytes) and
# RocksDB memory (kB, the sum of syncd_rocksdb_memory_bytes) from /metrics
# (NaN when a process does not answer).
# gnuplot (Debian gnuplot-nox, installed by scripts/setup.sh) draws RSS,
# fds and the data figures to bench/soak/NAME.png.
#
# At the end (load stopped, then the checks), every one must hold or the
# script exits 1:
#   - every linz segment's history passes the Porcupine check;
#   - `syncctl verify` agrees on every node for every collection;
#   - every watcher chain (its parts joined, tests/stream_check.c) holds
#     every committed version of "soak" exactly once, in order, seqs
#     without a gap;
#   - memory and fds are flat after warm-up (SOAK_WARMUP seconds, default
#     a sixth of the run, at least 60). "Within" below means: the highest
#     value in the second half of the samples is at most SOAK_RSS_PCT %
#     (default 20) above the highest in the first half, for fds at most
#     SOAK_FD_SLACK (default 10) above. Every one of these must hold:
#       - per lifetime: for each PID of each process, its samples from
#         SOAK_WARMUP seconds after both the load's start and its own
#         first sample: RSS and fds within. A restarted process starts low,
#         so only its own lifetime shows growth between restarts. A
#         lifetime with less than SOAK_LIFE_MIN seconds (default 600) of
#         such samples is too short to judge and is listed as such;
#       - per process, over the whole run after the warm-up, every
#         lifetime together: RSS and fds within (growth that outlives a
#         restart: Redis and FerretDB reload their data);
#       - Redis's used_memory, over the whole run after the warm-up (its
#         data survives its restarts): within. The replay logs are bounded
#         (above); if they were still filling after the warm-up, the
#         summary says so, and the run is too short for its
#         SOAK_EVENT_LOG_LEN;
#     each lifetime's fitted slope (MB/h) in each half is printed too, so
#     that growth too slow for the 20 % rule can be read from the figures;
#   - every fault was done, and no sanitizer report is in a node's log.
# SOAK_HEAPTRACK=1 runs node 1 under heaptrack's preload library (Debian's
# heaptrack package), which logs its every allocation and free with the
# call stack. The log is cut at the end of the warm-up and when the load
# stops; NAME.heaptrack.txt then lists the allocation sites whose memory
# still held grew most between the two (heaptrack_print --diff), and the
# summary gives the total held at each. Each lifetime of node 1 logs to a
# file of its own, and the one alive at the warm-up's end is followed, so
# leave kill out of SOAK_FAULTS; the node runs slower under it.
#
# The figures go to bench/soak/summary.txt (NAME.summary.txt with
# SOAK_NAME) and stdout. The run's folder
# (logs, histories, streams) is kept when a check fails, or with
# SOAK_KEEP=1; its path is printed.
#
# Binaries: SOAK_BUILD (default build/) for syncd, syncctl, linz_record and
# stream_check; .tools/bin for linzcheck and toxiproxy-server
# (scripts/setup.sh builds them). The sanitizer build works: ASan's
# quarantine of freed memory is capped at SOAK_ASAN_QUARANTINE_MB (default
# 16) so that it fills within the warm-up rather than look like growth.
#
# Usage: scripts/soak.sh [MINUTES]
set -uo pipefail

# The whole script is one block, read before it runs: bash reads a script
# as it goes, and a long run must not pick up edits made meanwhile.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
MINUTES="${1:-30}"
case "$MINUTES" in '' | *[!0-9]*) echo "usage: soak.sh [MINUTES]" >&2; exit 2 ;; esac
DURATION=$((MINUTES * 60))
BUILD="${SOAK_BUILD:-$ROOT/build}"
export SYNCD_BIN="$BUILD/syncd/syncd"
SYNCCTL="$BUILD/syncd/syncctl"
RECORD="$BUILD/tests/linz/linz_record"
CHECK="$BUILD/tests/stream_check"
LINZCHECK="${SYNCD_LINZCHECK:-$ROOT/.tools/bin/linzcheck}"
TOXIPROXY="${SYNCD_TOXIPROXY:-$ROOT/.tools/bin/toxiproxy-server}"
export SYNCD_FERRETDB="${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}"
OUT="${SOAK_OUT:-$ROOT/bench/soak}"
FAULT_INTERVAL="${SOAK_FAULT_INTERVAL:-60}"
IFS=, read -r -a FAULT_KINDS <<<"${SOAK_FAULTS:-kill,stop,redis,mongo,partition}"
SEGMENT="${SOAK_LINZ_SEGMENT:-300}"
PATCHERS="${SOAK_PATCHERS:-4}"
READERS="${SOAK_READERS:-3}"
CHAINS="${SOAK_WATCHERS:-3}"
LINZ_COLLS="${SOAK_LINZ_COLLS:-2}"
LINZ_SLOTS="${SOAK_LINZ_SLOTS:-8}"
EVENT_LOG_LEN="${SOAK_EVENT_LOG_LEN:-2000}"
LIFE_MIN="${SOAK_LIFE_MIN:-600}"
WARMUP="${SOAK_WARMUP:-$((DURATION / 6 > 60 ? DURATION / 6 : 60))}"
RSS_PCT="${SOAK_RSS_PCT:-20}"
FD_SLACK="${SOAK_FD_SLACK:-10}"
DOCS=16
RUN="$(mktemp -d /tmp/syncd-soak-XXXXXX)"
export SYNCD_CLUSTER_DIR="$RUN/cluster"
export SYNCD_CLUSTER_ARGS="${SOAK_NODE_ARGS:---anti-entropy-interval 5s --store-timeout 5s --request-timeout 10s --max-retries 100} --event-log-len $EVENT_LOG_LEN"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}:quarantine_size_mb=${SOAK_ASAN_QUARANTINE_MB:-16}"
CLUSTER="$ROOT/scripts/cluster.sh"
TP_PID=""
JOBS=()
FAILED=()

log() { echo "soak: $(date -u +%H:%M:%S) $*" >&2; }

die() {
    log "FAIL: $*"
    SOAK_KEEP=1
    exit 1
}

cleanup() {
    local p
    touch "$RUN/stop"
    for p in "${JOBS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    for p in "${JOBS[@]}"; do wait "$p" 2>/dev/null; done
    "$CLUSTER" stop >/dev/null 2>&1 || true
    if [ -n "$TP_PID" ]; then
        kill "$TP_PID" 2>/dev/null || true
        wait "$TP_PID" 2>/dev/null || true
    fi
    if [ "${SOAK_KEEP:-0}" = 1 ]; then
        echo "soak: the run's folder is kept: $RUN" >&2
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# spawn FUNCTION ARGS...: runs FUNCTION in the background as a process
# group of its own (so that it and its children can be ended together).
spawn() {
    set -m
    "$@" &
    JOBS+=($!)
    set +m
}

for f in "$SYNCD_BIN" "$SYNCCTL" "$RECORD" "$CHECK"; do
    [ -x "$f" ] || die "no $f (cmake --build $BUILD --target syncd syncctl linz_record stream_check)"
done
for f in "$LINZCHECK" "$TOXIPROXY" "$SYNCD_FERRETDB"; do
    [ -x "$f" ] || die "no $f (run scripts/setup.sh)"
done
[ "${#FAULT_KINDS[@]}" -gt 0 ] || die "SOAK_FAULTS names no fault"
for f in "${FAULT_KINDS[@]}"; do
    case "$f" in kill | stop | redis | mongo | partition) ;;
    *) die "SOAK_FAULTS: no fault kind '$f' (kill, stop, redis, mongo, partition)" ;;
    esac
done
command -v gnuplot >/dev/null || die "no gnuplot (apt-get install gnuplot-nox, or scripts/setup.sh)"
mkdir -p "$OUT" "$RUN/linz" "$RUN/watch" "$RUN/ops"

# ---- heaptrack (SOAK_HEAPTRACK=1) --------------------------------------------

HT_LIB=/usr/lib/heaptrack/libheaptrack_preload.so
HT_INTERPRET=/usr/lib/heaptrack/libexec/heaptrack_interpret
if [ "${SOAK_HEAPTRACK:-0}" = 1 ]; then
    [ -e "$HT_LIB" ] && [ -x "$HT_INTERPRET" ] && command -v heaptrack_print >/dev/null ||
        die "SOAK_HEAPTRACK=1: no heaptrack (apt-get install heaptrack)"
    mkdir -p "$RUN/heaptrack"
    # Node 1 (its --node-id) gets the preload, logging to node1.PID.raw.
    {
        echo '#!/bin/sh'
        echo 'for a in "$@"; do'
        echo "    if [ \"\$a\" = node-1 ]; then"
        echo "        export LD_PRELOAD='$HT_LIB' DUMP_HEAPTRACK_OUTPUT=\"$RUN/heaptrack/node1.\$\$.raw\""
        echo '    fi'
        echo 'done'
        echo "exec '$SYNCD_BIN' \"\$@\""
    } >"$RUN/heaptrack/syncd"
    chmod +x "$RUN/heaptrack/syncd"
    export SYNCD_BIN="$RUN/heaptrack/syncd"
fi

# heaptrack_cut NAME: copies the followed heaptrack log of node 1 (the
# newest at the first cut) as it stands, up to its last whole line, to
# NAME.raw.
heaptrack_cut() {
    local d="$RUN/heaptrack" log
    [ -e "$d/followed" ] || ls -t "$d"/node1.*.raw 2>/dev/null | head -1 >"$d/followed"
    log=$(cat "$d/followed")
    [ -n "$log" ] || return 0
    head -c "$(stat -c %s "$log")" "$log" | sed '$d' >"$d/$1.raw"
}

# heaptrack_at_warm: cuts node 1's log when the warm-up ends.
heaptrack_at_warm() { nap "$WARMUP" && heaptrack_cut warm; }

# heaptrack_report: interprets the two cuts, writes what grew between them
# to NAME.heaptrack.txt and prints the summary's line.
heaptrack_report() {
    local d="$RUN/heaptrack" c held=()
    if [ ! -s "$d/warm.raw" ] || [ ! -s "$d/end.raw" ]; then
        echo "heaptrack: node 1's log was not cut (a run shorter than its warm-up?)"
        return
    fi
    for c in warm end; do
        "$HT_INTERPRET" <"$d/$c.raw" 2>/dev/null | gzip -1 >"$d/$c.gz"
        held+=("$(heaptrack_print -f "$d/$c.gz" -p 0 -a 0 -T 0 -l 0 2>/dev/null |
            sed -n 's/^total memory leaked: //p')")
    done
    heaptrack_print -f "$d/end.gz" -d "$d/warm.gz" -p 0 -a 0 -T 0 -l 1 -n 10 -s 2 \
        >"$OUT/${SOAK_NAME:+$SOAK_NAME.}heaptrack.txt" 2>&1
    echo "heaptrack: node 1 held ${held[0]} at the warm-up's end, ${held[1]} when the load stopped (what grew: ${SOAK_NAME:+$SOAK_NAME.}heaptrack.txt)"
}

# elapsed: seconds since the load started.
elapsed() { echo $(($(date +%s) - T0)); }

stopping() { [ -e "$RUN/stop" ]; }

# nap SECONDS: sleeps, in steps of a second, until SECONDS pass or the load
# stops.
nap() {
    local i
    for ((i = 0; i < $1; i++)); do
        stopping && return 1
        sleep 1
    done
}

# ---- Toxiproxy and the cluster ---------------------------------------------

TP_PORT=$(free_port)
TP="http://127.0.0.1:$TP_PORT"
LOG_LEVEL=warn "$TOXIPROXY" -host 127.0.0.1 -port "$TP_PORT" >"$RUN/toxiproxy.log" 2>&1 &
TP_PID=$!
for _ in $(seq 200); do curl -sf "$TP/version" >/dev/null && break; sleep 0.1; done
curl -sf "$TP/version" >/dev/null || die "Toxiproxy did not start"

# proxy NAME UPSTREAM_PORT: creates a proxy on a free port; prints the port.
proxy() {
    curl -sf -X POST -d "{\"name\":\"$1\",\"listen\":\"127.0.0.1:0\",\"upstream\":\"127.0.0.1:$2\"}" \
        "$TP/proxies" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"].rsplit(":",1)[1])'
}

# enable PROXY true|false
enable() { curl -sf -o /dev/null -X POST -d "{\"enabled\":$2}" "$TP/proxies/$1"; }

"$CLUSTER" start >"$RUN/cluster.out" || die "the cluster did not start ($RUN/cluster.out)"
# shellcheck disable=SC1091
. "$SYNCD_CLUSTER_DIR/env"
NODES=("$NODE1" "$NODE2" "$NODE3")
for n in 1 2 3; do
    mp=$(proxy "mongo$n" "$MONGO_PORT") && rp=$(proxy "redis$n" "$REDIS_PORT") ||
        die "Toxiproxy proxies for node $n"
    export "NODE${n}_MONGO_URI=mongodb://127.0.0.1:$mp/" "NODE${n}_REDIS_URL=redis://127.0.0.1:$rp"
    "$CLUSTER" kill-node "$n"
    "$CLUSTER" start-node "$n" || die "node $n did not start on its proxies"
done
for ((d = 0; d < DOCS; d++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"items":{},"m":{}}' \
        "$NODE1/v1/collections/soak/docs/d$d")
    [ "$code" = 201 ] || die "create of soak/d$d answered $code"
done
log "cluster up (state $SYNCD_CLUSTER_DIR), load for $MINUTES min, a fault every $FAULT_INTERVAL s"

# ---- Load -------------------------------------------------------------------

# linz_segments: records the Porcupine history in segments, each checked in
# the background as soon as it ends ($RUN/linz/S.rc holds the verdict).
linz_segments() {
    local s=1 left coll slots=()
    [ "$LINZ_SLOTS" -eq 0 ] || slots=(--slots "$LINZ_SLOTS")
    while ! stopping; do
        left=$((DURATION - $(elapsed)))
        [ "$left" -ge 10 ] || break
        [ "$left" -le "$SEGMENT" ] || left="$SEGMENT"
        coll="linz$s"
        [ "$LINZ_COLLS" -eq 0 ] || coll="linz$(((s - 1) % LINZ_COLLS + 1))"
        echo "$coll" >"$RUN/linz/$s.coll"
        "$RECORD" --out "$RUN/linz/$s.jsonl" --seconds "$left" --clients 6 --keys 3 \
            --timeout-ms 15000 "${slots[@]}" --coll "$coll" "${NODES[@]}" \
            >"$RUN/linz/$s.record" 2>&1
        echo $? >"$RUN/linz/$s.record.rc"
        ("$LINZCHECK" -mode cluster -html "$RUN/linz/$s.html" -timeout 10m \
            "$RUN/linz/$s.jsonl" >"$RUN/linz/$s.report" 2>&1
        echo $? >"$RUN/linz/$s.rc") &
        s=$((s + 1))
    done
    wait
}

# patcher I: JSON Patches and merge patches to random documents through
# node I mod 3, each answer's status appended to $RUN/ops/patch.I.
patcher() {
    local i="$1" node="${NODES[$(($1 % 3))]}" n=0 d k code
    while ! stopping; do
        n=$((n + 1))
        d="d$((RANDOM % DOCS))"
        k="k$((RANDOM % 32))"
        if ((RANDOM % 2)); then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PATCH \
                -H 'Content-Type: application/json-patch+json' \
                -d "[{\"op\":\"add\",\"path\":\"/items/$k\",\"value\":\"p$i-$n\"}]" \
                "$node/v1/collections/soak/docs/$d")
            echo "jsonpatch $code" >>"$RUN/ops/patch.$i"
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PATCH \
                -H 'Content-Type: application/merge-patch+json' \
                -d "{\"m\":{\"$k\":\"p$i-$n\"}}" "$node/v1/collections/soak/docs/$d")
            echo "mergepatch $code" >>"$RUN/ops/patch.$i"
        fi
        sleep 0.05
    done
}

# reader I: reads random documents through node I mod 3 (a listing every
# tenth time), each status appended to $RUN/ops/read.I.
reader() {
    local i="$1" node="${NODES[$(($1 % 3))]}" n=0 code
    while ! stopping; do
        n=$((n + 1))
        if ((n % 10 == 0)); then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
                "$node/v1/collections/soak/docs?limit=100")
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
                "$node/v1/collections/soak/docs/d$((RANDOM % DOCS))")
        fi
        echo "read $code" >>"$RUN/ops/read.$i"
        sleep 0.05
    done
}

# watch_part CHAIN PART NODE SINCE: one watcher, `syncctl watch soak` from
# SINCE, in the background, its pid in WPID. Its stream goes to
# $RUN/watch/CHAIN.PART, named in $RUN/watch/CHAIN.parts.
watch_part() {
    local f="$RUN/watch/$1.$2"
    echo "$f" >>"$RUN/watch/$1.parts"
    echo "$3 --since $4" >"$f.where"
    "$SYNCCTL" --server "$3" watch soak --since "$4" >"$f" 2>"$f.err" &
    WPID=$!
}

# part_end CHAIN PART: stops the watcher WPID (noting when it had ended by
# itself) and sets SINCE to the seq to resume from.
part_end() {
    local f="$RUN/watch/$1.$2" last rc
    if kill -0 "$WPID" 2>/dev/null; then
        kill -TERM "$WPID" 2>/dev/null
        wait "$WPID" 2>/dev/null
    else
        wait "$WPID" 2>/dev/null
        rc=$?
        echo "$1.$2 ($(cat "$f.where")) ended by itself, status $rc: $(tail -n 2 "$f.err" | tr '\n' ' ')" \
            >>"$RUN/watch/ended"
    fi
    last=$("$CHECK" last "$f" 2>/dev/null)
    [ "${last:-0}" -gt 0 ] 2>/dev/null && SINCE="$last"
    return 0
}

# chain C: watchers that come and go, each resuming where the last stopped.
chain() {
    local c="$1" part=0
    SINCE=0
    while ! stopping; do
        part=$((part + 1))
        watch_part "$c" "$part" "${NODES[$((RANDOM % 3))]}" "$SINCE"
        nap $((10 + RANDOM % 51))
        part_end "$c" "$part"
    done
    echo "$part $SINCE" >"$RUN/watch/$c.state"
}

# ---- Faults -------------------------------------------------------------------

# start_node N: starts node N again; a start that fails (the store or the
# bus slow to answer on a loaded machine) is waited for or tried again,
# three times in all, and counted in $RUN/restart-failures.
start_node() {
    local try url="${NODES[$(($1 - 1))]}"
    for try in 1 2 3; do
        "$CLUSTER" start-node "$1" >>"$RUN/faults.out" 2>&1 && return 0
        echo "node $1 at $(elapsed) s, try $try" >>"$RUN/restart-failures"
        # Still starting: give it more time rather than a second process.
        for _ in $(seq 30); do
            kill -0 "$(cat "$SYNCD_CLUSTER_DIR/node$1/pid")" 2>/dev/null || break
            curl -sf --max-time 2 "$url/v1/health" >/dev/null && return 0
            sleep 1
        done
    done
    return 1
}

# fault K: the K-th fault (0-based) of the rotation FAULT_KINDS; appends "T KIND NODE RESULT" to
# $RUN/faults.
fault() {
    local k="$1" kind n=$(($1 % 3 + 1)) ok=ok t pid
    kind="${FAULT_KINDS[$((k % ${#FAULT_KINDS[@]}))]}"
    t=$(elapsed)
    echo "$kind" >"$RUN/fault.now"
    case "$kind" in redis | mongo) log "fault $((k + 1)): $kind" ;;
    *) log "fault $((k + 1)): $kind, node $n" ;; esac
    case "$kind" in
    kill)
        "$CLUSTER" kill-node "$n" || ok=failed
        sleep 1
        start_node "$n" || ok=failed
        ;;
    stop)
        pid=$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")
        kill -STOP "$pid" || ok=failed
        sleep 5
        kill -CONT "$pid" || ok=failed
        ;;
    redis)
        "$CLUSTER" stop-redis >>"$RUN/faults.out" 2>&1 || ok=failed
        sleep 1
        "$CLUSTER" start-redis >>"$RUN/faults.out" 2>&1 || ok=failed
        ;;
    mongo) "$CLUSTER" restart-mongo >>"$RUN/faults.out" 2>&1 || ok=failed ;;
    partition)
        enable "redis$n" false || ok=failed
        sleep 20
        enable "redis$n" true || ok=failed
        ;;
    esac
    case "$kind" in redis | mongo) n=- ;; esac
    echo "$t $kind $n $ok" >>"$RUN/faults"
    echo "-" >"$RUN/fault.now"
}

# faults: the K-th fault at K x FAULT_INTERVAL seconds (K = 1, 2, ...),
# while it can end (a partition takes 20 s) before the load does.
faults() {
    local k=0 wait
    while :; do
        wait=$(((k + 1) * FAULT_INTERVAL - $(elapsed)))
        [ "$wait" -le 0 ] || nap "$wait" || break
        [ $(($(elapsed) + 25)) -lt "$DURATION" ] || break
        fault "$k"
        k=$((k + 1))
    done
}

# ---- Sampler ------------------------------------------------------------------

PROCS=(node1 node2 node3 redis ferretdb)
pidfile() {
    case "$1" in
    node*) echo "$SYNCD_CLUSTER_DIR/$1/pid" ;;
    *) echo "$SYNCD_CLUSTER_DIR/$1.pid" ;;
    esac
}

# What Redis holds for syncd: the entries of every replay log, the fields
# of every "pubv" hash, and the key count (a Lua script; KEYS is fine on
# the few keys of the soak).
REDIS_FIGURES="local l, p = 0, 0
for _, k in ipairs(redis.call('KEYS', 'syncd:*:log')) do l = l + redis.call('XLEN', k) end
for _, k in ipairs(redis.call('KEYS', 'syncd:*:pubv')) do p = p + redis.call('HLEN', k) end
return {l, p, redis.call('DBSIZE')}"

# sample: one CSV row: seconds, then each process's RSS (kB) and open fds
# (NaN when it is not running), the fault under way, each process's PID,
# Redis's used_memory (kB), replay-log entries, pubv fields and keys, and
# each node's cache kB and entries (NaN for what does not answer).
sample() {
    local row pids="" p pid rss fds r m n url metrics
    row="$(elapsed)"
    for p in "${PROCS[@]}"; do
        pid=$(cat "$(pidfile "$p")" 2>/dev/null)
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
        if [ -n "$pid" ] && [ -n "$rss" ]; then
            row="$row,$rss,$fds"
            pids="$pids,$pid"
        else
            row="$row,NaN,NaN"
            pids="$pids,NaN"
        fi
    done
    row="$row,$(cat "$RUN/fault.now" 2>/dev/null || echo -)$pids"
    m=$(timeout 3 redis-cli -p "$REDIS_PORT" INFO memory 2>/dev/null |
        awk -F: '/^used_memory:/ {printf "%d", $2 / 1024}')
    r=$(timeout 3 redis-cli -p "$REDIS_PORT" --raw EVAL "$REDIS_FIGURES" 0 2>/dev/null | paste -sd,)
    [[ "$m" =~ ^[0-9]+$ ]] || m=NaN
    [[ "$r" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || r=NaN,NaN,NaN
    row="$row,$m,$r"
    for url in "${NODES[@]}"; do
        metrics=$(curl -s --max-time 2 "$url/metrics" 2>/dev/null)
        n=$(awk '$1 == "syncd_cache_bytes" {b = $2} $1 == "syncd_cache_entries" {e = $2}
            $1 == "syncd_heap_bytes{kind=\"in_use\"}" {u = $2}
            $1 == "syncd_heap_bytes{kind=\"free\"}" {f = $2}
            $1 ~ /^syncd_rocksdb_memory_bytes[{]/ {r += $2; rs = 1}
            END {if (b != "" && e != "" && u != "" && f != "" && rs)
                printf "%d,%d,%d,%d,%d", b / 1024, e, u / 1024, f / 1024, r / 1024}' <<<"$metrics")
        row="$row,${n:-NaN,NaN,NaN,NaN,NaN}"
    done
    echo "$row" >>"$CSV"
}

sampler() {
    while ! stopping; do
        sample
        nap 10
    done
}

CSV="$OUT/${SOAK_NAME:-soak}.csv"
PNG="$OUT/${SOAK_NAME:-soak}.png"
{
    printf 't_s'
    for p in "${PROCS[@]}"; do printf ',%s_rss_kb,%s_fds' "$p" "$p"; done
    printf ',fault'
    for p in "${PROCS[@]}"; do printf ',%s_pid' "$p"; done
    printf ',redis_used_kb,redis_log_entries,redis_pubv_fields,redis_keys'
    for n in 1 2 3; do
        printf ',node%s_cache_kb,node%s_cache_entries' "$n" "$n"
        printf ',node%s_heap_in_use_kb,node%s_heap_free_kb,node%s_rocksdb_kb' "$n" "$n" "$n"
    done
    printf '\n'
} >"$CSV"

T0=$(date +%s)
echo - >"$RUN/fault.now"
spawn sampler
spawn linz_segments
for ((i = 1; i <= PATCHERS; i++)); do spawn patcher "$i"; done
for ((i = 1; i <= READERS; i++)); do spawn reader "$i"; done
for ((i = 1; i <= CHAINS; i++)); do spawn chain "w$i"; done
spawn faults
if [ "${SOAK_HEAPTRACK:-0}" = 1 ]; then
    spawn heaptrack_at_warm
fi

nap "$DURATION" || true
log "load time is up; stopping the load"
touch "$RUN/stop"
if [ "${SOAK_HEAPTRACK:-0}" = 1 ]; then heaptrack_cut end; fi
sample
for p in "${JOBS[@]}"; do wait "$p"; done
JOBS=()
log "load stopped after $(elapsed) s"

# ---- Checks -------------------------------------------------------------------

for n in 1 2 3; do
    kill -0 "$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")" 2>/dev/null || {
        FAILED+=("node $n is not running at the end")
        start_node "$n"
    }
done

# Faults: each one done.
FAULTS_DONE=$(wc -l <"$RUN/faults" 2>/dev/null || echo 0)
FAULTS_FAILED=$(grep -vc ' ok$' "$RUN/faults" 2>/dev/null)
[ "${FAULTS_FAILED:-0}" -eq 0 ] || FAILED+=("$FAULTS_FAILED faults could not be done ($RUN/faults)")

# syncctl verify: every node agrees with the store, for every collection
# (retried while anti-entropy repairs what the last fault left).
NODELIST="$NODE1,$NODE2,$NODE3"
mapfile -t COLLS < <({
    echo soak
    cat "$RUN"/linz/*.coll 2>/dev/null
} | sort -u)
VERIFY_OK=0
for c in "${COLLS[@]}"; do
    for try in $(seq 15); do
        if "$SYNCCTL" --server "$NODE1" verify "$c" --nodes "$NODELIST" \
            >"$RUN/verify.$c" 2>"$RUN/verify.$c.err"; then
            VERIFY_OK=$((VERIFY_OK + 1))
            break
        fi
        [ "$try" -lt 15 ] || FAILED+=("syncctl verify $c: the nodes do not agree ($(head -c 400 "$RUN/verify.$c" "$RUN/verify.$c.err" | tr '\n' ' '))")
        sleep 2
    done
done

# Watchers: a last part per chain until it reaches the store's last seq,
# then each chain against FerretDB.
SEQ=$(curl -s --max-time 10 "$NODE1/v1/collections/soak/docs?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
STREAMS=()
WATCH_PARTS=0
for ((i = 1; i <= CHAINS; i++)); do
    read -r part SINCE <"$RUN/watch/w$i.state"
    part=$((part + 1))
    watch_part "w$i" "$part" "$NODE1" "$SINCE"
    t=$(date +%s)
    # A chain already at SEQ gets no event to show it: no wait for one.
    while [ "$SINCE" -lt "$SEQ" ] && [ $(($(date +%s) - t)) -lt 60 ] &&
        kill -0 "$WPID" 2>/dev/null; do
        "$CHECK" reached "$SEQ" "$RUN/watch/w$i.$part" 2>/dev/null && break
        sleep 0.2
    done
    part_end "w$i" "$part"
    WATCH_PARTS=$((WATCH_PARTS + part))
    STREAMS+=("$(paste -sd+ "$RUN/watch/w$i.parts")")
done
if ! "$CHECK" check "$MONGO_URI" syncd soak "${STREAMS[@]}" >"$RUN/stream_check.out" 2>&1; then
    FAILED+=("watcher streams break the every-version contract ($RUN/stream_check.out)")
    tail -n 20 "$RUN/stream_check.out" >&2
fi
WATCH_ENDED=$(cat "$RUN/watch/ended" 2>/dev/null | wc -l)
WATCH_RESYNCS=$(grep -c 'resync needed\|410 gone' "$RUN/watch/ended" 2>/dev/null)

# Porcupine: every segment's verdict.
LINZ_SEGS=0
LINZ_PASS=0
LINZ_OPS=0
for f in "$RUN"/linz/*.jsonl; do
    [ -e "$f" ] || continue
    s=$(basename "$f" .jsonl)
    LINZ_SEGS=$((LINZ_SEGS + 1))
    LINZ_OPS=$((LINZ_OPS + $(wc -l <"$f")))
    if [ "$(cat "$RUN/linz/$s.record.rc")" = 0 ] && [ "$(cat "$RUN/linz/$s.rc" 2>/dev/null)" = 0 ]; then
        LINZ_PASS=$((LINZ_PASS + 1))
    else
        FAILED+=("linz segment $s: $(tail -n 3 "$RUN/linz/$s.record" "$RUN/linz/$s.report" | tr '\n' ' ') (history and visualization in $RUN/linz)")
    fi
done

# The nodes stopped cleanly (LeakSanitizer reports at exit), then their
# logs searched for sanitizer reports.
for n in 1 2 3; do
    kill -TERM "$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")" 2>/dev/null
done
for n in 1 2 3; do
    for _ in $(seq 300); do
        kill -0 "$(cat "$SYNCD_CLUSTER_DIR/node$n/pid")" 2>/dev/null || break
        sleep 0.1
    done
    cp "$SYNCD_CLUSTER_DIR/node$n/syncd.log" "$RUN/node$n.log"
    if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$RUN/node$n.log"; then
        FAILED+=("sanitizer report in node $n's log ($RUN/node$n.log)")
    fi
done

# Operations.
count() { cat "$RUN"/ops/$1.* 2>/dev/null | awk -v w="$2" '$1 ~ w' | wc -l; }
count_ok() { cat "$RUN"/ops/$1.* 2>/dev/null | awk -v w="$2" '$1 ~ w && $2 ~ /^2/' | wc -l; }
OPS="JSON Patch $(count_ok patch jsonpatch)/$(count patch jsonpatch) ok, merge patch $(count_ok patch mergepatch)/$(count patch mergepatch) ok, reads $(count_ok read read)/$(count read read) ok, linz operations $LINZ_OPS"
STATUSES=$(cat "$RUN"/ops/* 2>/dev/null | awk '{print $2}' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')

# Memory and fds: flat after warm-up (the rule is in the header).
FLAT=$(python3 - "$CSV" "$WARMUP" "$RSS_PCT" "$FD_SLACK" "$LIFE_MIN" "$EVENT_LOG_LEN" <<'EOF'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warm, pct, slack = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
life_min, log_len = int(sys.argv[5]), int(sys.argv[6])
procs = [k[:-7] for k in rows[0] if k.endswith("_rss_kb")]
bad = 0

def val(r, k):
    try:
        v = float(r.get(k) or "nan")
    except ValueError:
        return None
    return None if math.isnan(v) else v

def series(rs, col):
    return [(int(r["t_s"]), val(r, col)) for r in rs if val(r, col) is not None]

def slope(pts):
    """Least-squares slope of pts, per hour."""
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts) or 1
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 3600

def within(pts, kind):
    """(ok, text): the second half's highest value against the first's."""
    half = len(pts) // 2
    a, b = [v for _, v in pts[:half]], [v for _, v in pts[half:]]
    s1, s2 = slope(pts[:half]), slope(pts[half:])
    if kind == "RSS":
        ok = max(b) <= max(a) * (1 + pct / 100)
        return ok, (f"RSS {pts[0][1]/1024:.1f}->{pts[-1][1]/1024:.1f} MB "
                    f"(peak {max(a)/1024:.1f} then {max(b)/1024:.1f} MB; "
                    f"{slope(pts)/1024:+.1f} MB/h, halves {s1/1024:+.1f} then "
                    f"{s2/1024:+.1f}) {'flat' if ok else 'GROWS'}")
    ok = max(b) <= max(a) + slack
    return ok, (f"fds {pts[0][1]:.0f}->{pts[-1][1]:.0f} (peak {max(a):.0f} "
                f"then {max(b):.0f}) {'flat' if ok else 'GROWS'}")

after = [r for r in rows if int(r["t_s"]) >= warm]
if len(after) < 4:
    print(f"FAIL: only {len(after)} samples after the warm-up of {warm} s")
    sys.exit(1)
for p in procs:
    # Each lifetime (PID) on its own, from its own warm-up on.
    lives = {}
    for r in rows:
        pid = r.get(p + "_pid")
        if pid not in (None, "", "NaN") and val(r, p + "_rss_kb") is not None:
            lives.setdefault(pid, []).append(r)
    short = []
    for pid, rs in lives.items():
        born = int(rs[0]["t_s"])
        judged = [r for r in rs if int(r["t_s"]) >= max(warm, born + warm)]
        span = int(judged[-1]["t_s"]) - int(judged[0]["t_s"]) if judged else 0
        head = f"  {p} pid {pid} ({born}-{int(rs[-1]['t_s'])} s):"
        if span < life_min or len(judged) < 4:
            short.append(int(rs[-1]["t_s"]) - born)
            continue
        out = []
        for kind, col in (("RSS", p + "_rss_kb"), ("fds", p + "_fds")):
            ok, text = within(series(judged, col), kind)
            bad += not ok
            out.append(text)
        print(f"{head} " + "; ".join(out))
    if short:
        print(f"  {p}: {len(short)} lifetimes not judged (less than {life_min} s "
              f"of samples after their warm-up; the longest lived {max(short)} s)")
    # The whole run after the warm-up, every lifetime together.
    out = []
    for kind, col in (("RSS", p + "_rss_kb"), ("fds", p + "_fds")):
        pts = series(after, col)
        if len(pts) < 4:
            print(f"  {p}: no {kind} samples after the warm-up")
            bad += 1
            continue
        ok, text = within(pts, kind)
        bad += not ok
        out.append(text)
    print(f"  {p} whole run ({len(lives)} lifetimes): " + "; ".join(out))

# Redis's data, which survives its restarts.
used = series(after, "redis_used_kb")
logs = series(after, "redis_log_entries")
if len(used) >= 4:
    half = len(used) // 2
    a, b = [v for _, v in used[:half]], [v for _, v in used[half:]]
    ok = max(b) <= max(a) * (1 + pct / 100)
    bad += not ok
    print(f"  redis used_memory: {used[0][1]/1024:.1f}->{used[-1][1]/1024:.1f} MB "
          f"(peak {max(a)/1024:.1f} then {max(b)/1024:.1f} MB; "
          f"{slope(used)/1024:+.1f} MB/h) {'flat' if ok else 'GROWS'}")
else:
    bad += 1
    print("  redis used_memory: too few samples after the warm-up")
if logs:
    full = max(v for _, v in logs) <= logs[0][1] * (1 + pct / 100)
    print(f"  redis replay logs: {logs[0][1]:.0f} entries at the warm-up's end, "
          f"{logs[-1][1]:.0f} at the end (at most about {log_len} per collection)"
          + ("" if full else "; STILL FILLING after the warm-up: lengthen "
             "SOAK_WARMUP or lower SOAK_EVENT_LOG_LEN"))
figs = []
for col, what in (("redis_pubv_fields", "pubv fields"), ("redis_keys", "keys")):
    pts = series(after, col)
    if pts:
        figs.append(f"{what} {pts[0][1]:.0f}->{pts[-1][1]:.0f}")
for n in (1, 2, 3):
    kb = series(after, f"node{n}_cache_kb")
    ent = series(after, f"node{n}_cache_entries")
    if kb and ent:
        figs.append(f"node{n} cache {kb[0][1]:.0f}->{kb[-1][1]:.0f} kB, "
                    f"{ent[0][1]:.0f}->{ent[-1][1]:.0f} entries")
    mem = [(what, series(after, f"node{n}_{col}"))
           for col, what in (("heap_in_use_kb", "heap in use"),
                             ("heap_free_kb", "heap free"),
                             ("rocksdb_kb", "RocksDB"))]
    if all(pts for _, pts in mem):
        figs.append(f"node{n} " + ", ".join(
            f"{what} {pts[0][1]:.0f}->{pts[-1][1]:.0f} kB "
            f"({slope(pts) / 1024:+.1f} MB/h)" for what, pts in mem))
if figs:
    print("  data: " + "; ".join(figs))
print(f"verdict: {'flat' if not bad else 'NOT flat'} after a warm-up of {warm} s "
      f"(highest of the second half within {pct:g} % of the first for RSS and "
      f"Redis's used_memory, within {slack} for fds; per lifetime of at least "
      f"{life_min} s, and over the whole run)")
sys.exit(1 if bad else 0)
EOF
) || FAILED+=("memory or fds not flat after warm-up (above)")

# The plot.
gnuplot <<EOF 2>"$RUN/gnuplot.err" || FAILED+=("gnuplot failed ($(head -c 300 "$RUN/gnuplot.err"))")
set datafile separator ","
set datafile missing "NaN"
set terminal pngcairo size 1200,1500 noenhanced
set output "$PNG"
set multiplot layout 4,1 title "syncd soak: $MINUTES min, 3 nodes, a fault every $FAULT_INTERVAL s (${FAULT_KINDS[*]}; warm-up $WARMUP s)"
set key outside right
set grid
set xlabel "seconds"
set arrow from $WARMUP, graph 0 to $WARMUP, graph 1 nohead dashtype 2
set ylabel "RSS (MB)"
plot for [i=0:4] "$CSV" using 1:(column(2+2*i)/1024) with lines title columnhead(2+2*i)
set ylabel "open fds"
plot for [i=0:4] "$CSV" using 1:(column(3+2*i)) with lines title columnhead(3+2*i)
# Columns 18-36: Redis's used_memory, replay-log entries, pubv fields and
# keys, then per node (5 columns each, from 22) its cache kB and entries,
# heap in use and free, and RocksDB memory (kB).
set ylabel "data (MB)"
set y2label "entries, fields"
set y2tics
plot "$CSV" using 1:(\$18/1024) with lines title "redis used_memory (MB)", \
     for [i=0:2] "$CSV" using 1:(column(22+5*i)/1024) with lines title columnhead(22+5*i), \
     "$CSV" using 1:19 axes x1y2 with lines dashtype 2 title "replay-log entries (right)", \
     "$CSV" using 1:20 axes x1y2 with lines dashtype 3 title "pubv fields (right)"
unset y2label
unset y2tics
set ylabel "node memory (MB)"
plot for [i=0:2] "$CSV" using 1:(column(24+5*i)/1024) with lines title columnhead(24+5*i), \
     for [i=0:2] "$CSV" using 1:(column(26+5*i)/1024) with lines dashtype 2 title columnhead(26+5*i)
unset multiplot
EOF

{
    echo "syncd soak, $(date -u +%Y-%m-%dT%H:%MZ): $MINUTES min ($DURATION s), 3 nodes (FerretDB store, Redis bus, Toxiproxy on every link), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "faults: $FAULTS_DONE done ($(awk '{print $2}' "$RUN/faults" 2>/dev/null | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')failed ${FAULTS_FAILED:-0})"
    echo "operations: $OPS"
    echo "statuses: $STATUSES"
    echo "load: linz on $(printf '%s\n' "${COLLS[@]}" | grep -c '^linz') collections ($([ "$LINZ_SLOTS" -eq 0 ] && echo "fresh documents every epoch" || echo "$LINZ_SLOTS slots x 3 documents each, reset before each epoch")), soak $DOCS documents; replay logs bounded at $EVENT_LOG_LEN events"
    echo "Porcupine: $LINZ_PASS of $LINZ_SEGS segments linearizable (writes; reads from writes, monotonic per client, read-your-writes)"
    echo "syncctl verify: $VERIFY_OK of ${#COLLS[@]} collections agree on every node"
    echo "watchers: $CHAINS chains, $WATCH_PARTS watches, $WATCH_ENDED ended by themselves (${WATCH_RESYNCS:-0} told to resync); $(tail -n "$CHAINS" "$RUN/stream_check.out" | sed 's/^[^:]*: //' | paste -sd';')"
    echo "memory and fds (after warm-up, first -> last sample):"
    echo "$FLAT"
    if [ "${SOAK_HEAPTRACK:-0}" = 1 ]; then heaptrack_report; fi
    if [ "${#FAILED[@]}" -gt 0 ]; then
        printf 'FAIL: %s\n' "${FAILED[@]}"
    else
        echo "PASS"
    fi
} | tee "$OUT/${SOAK_NAME:+$SOAK_NAME.}summary.txt"
[ "${#FAILED[@]}" -eq 0 ] || { SOAK_KEEP=1; exit 1; }
exit 0
}
