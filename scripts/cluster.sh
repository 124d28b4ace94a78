#!/usr/bin/env bash
# cluster.sh - a real three-node syncd cluster on one machine, without
# Docker: FerretDB (the MongoDB store of record), Redis (the change bus) and
# three syncd nodes, each on a free loopback port with its own data dir.
#
#   scripts/cluster.sh start          start everything, print the URLs
#   scripts/cluster.sh status         show what runs
#   scripts/cluster.sh stop           stop everything, remove the state
#   scripts/cluster.sh kill-node N    SIGKILL node N (1..3)
#   scripts/cluster.sh start-node N   start node N again (same port, dir)
#   scripts/cluster.sh restart-redis  stop Redis and start it again, its
#                                     data lost (no persistence)
#   scripts/cluster.sh restart-mongo  stop FerretDB (SIGTERM) and start it
#                                     again (same port, its data kept)
#   scripts/cluster.sh stop-redis     stop Redis, saving its data to its
#                                     dump file as a persistent Redis
#                                     would (start-redis loads it)
#   scripts/cluster.sh start-redis    start Redis again (same port)
#   scripts/cluster.sh pause-redis    freeze Redis with SIGSTOP
#   scripts/cluster.sh resume-redis   thaw it with SIGCONT
#
# State lives in $SYNCD_CLUSTER_DIR (default /tmp/syncd-cluster-$USER);
# $DIR/env holds NODE1..NODE3 (URLs), REDIS_URL and MONGO_URI for scripts.
# SYNCD_BIN names the syncd binary (default build/syncd/syncd) and
# SYNCD_CLUSTER_ARGS adds flags to every node. NODE<N>_MONGO_URI and
# NODE<N>_REDIS_URL, when set, give node N its own way to the store and the
# bus (a fault-injecting proxy: tests/test_netfault.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"
DIR="${SYNCD_CLUSTER_DIR:-${TMPDIR:-/tmp}/syncd-cluster-${USER:-$(id -un)}}"
SYNCD_BIN="${SYNCD_BIN:-$ROOT/build/syncd/syncd}"
FERRETDB="${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}"

# wait_for CMD... : retries CMD for up to 20 s.
wait_for() {
    for _ in $(seq 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize yes --pidfile "$DIR/redis.pid" \
        --logfile "$DIR/redis.log" --dir "$DIR"
    wait_for timeout 2 redis-cli -p "$REDIS_PORT" ping ||
        { echo "cluster: redis did not start (see $DIR/redis.log)" >&2; exit 1; }
}

# stop_redis [save|nosave]: shuts Redis down (default nosave: data lost).
stop_redis() {
    redis-cli -p "$REDIS_PORT" shutdown "${1:-nosave}" >/dev/null 2>&1 || true
    for _ in $(seq 100); do alive "$DIR/redis.pid" || break; sleep 0.1; done
}

stop_pidfile() {
    local f="$1"
    if alive "$f"; then
        kill -TERM "$(cat "$f")" 2>/dev/null || true
        for _ in $(seq 100); do alive "$f" || break; sleep 0.1; done
        if alive "$f"; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

# start_ferretdb: starts FerretDB (again) on MONGO_PORT; its SQLite files in
# $DIR/fdb survive a restart.
start_ferretdb() {
    "$FERRETDB" --handler=sqlite --sqlite-url="file:$DIR/fdb/" \
        --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$DIR/fdb-state" \
        --telemetry=disable --log-level=warn --debug-addr=- \
        >>"$DIR/ferretdb.log" 2>&1 &
    echo $! >"$DIR/ferretdb.pid"
    wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$MONGO_PORT" || {
        echo "cluster: FerretDB did not start (see $DIR/ferretdb.log)" >&2
        exit 1
    }
}

start_node() {
    local n="$1" port var mongo redis
    var="NODE${n}_PORT"
    port="${!var}"
    mongo="NODE${n}_MONGO_URI"
    redis="NODE${n}_REDIS_URL"
    mkdir -p "$DIR/node$n"
    # shellcheck disable=SC2086
    "$SYNCD_BIN" --listen "127.0.0.1:$port" --data-dir "$DIR/node$n/data" \
        --node-id "node-$n" --mongo-uri "${!mongo:-$MONGO_URI}" \
        --redis-url "${!redis:-$REDIS_URL}" \
        ${SYNCD_CLUSTER_ARGS:-} >>"$DIR/node$n/syncd.log" 2>&1 &
    echo $! >"$DIR/node$n/pid"
    wait_for curl -sf "http://127.0.0.1:$port/v1/health" || {
        echo "cluster: node $n did not start (see $DIR/node$n/syncd.log)" >&2
        exit 1
    }
}

load_env() {
    [ -f "$DIR/env" ] || { echo "cluster: not started ($DIR)" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$DIR/env"
}

cmd_start() {
    if [ -f "$DIR/env" ]; then
        echo "cluster: already started in $DIR (stop it first)" >&2
        exit 1
    fi
    [ -x "$SYNCD_BIN" ] || { echo "cluster: no syncd at $SYNCD_BIN" >&2; exit 1; }
    [ -x "$FERRETDB" ] || { echo "cluster: no FerretDB at $FERRETDB (run scripts/setup.sh)" >&2; exit 1; }
    mkdir -p "$DIR/fdb" "$DIR/fdb-state"
    # A start that fails half-way stops what it started.
    trap 'cmd_stop' ERR EXIT
    read -r MONGO_PORT REDIS_PORT NODE1_PORT NODE2_PORT NODE3_PORT \
        <<<"$(free_ports 5)"
    MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/"
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    cat >"$DIR/env" <<EOF
MONGO_PORT=$MONGO_PORT
REDIS_PORT=$REDIS_PORT
NODE1_PORT=$NODE1_PORT
NODE2_PORT=$NODE2_PORT
NODE3_PORT=$NODE3_PORT
MONGO_URI=$MONGO_URI
REDIS_URL=$REDIS_URL
NODE1=http://127.0.0.1:$NODE1_PORT
NODE2=http://127.0.0.1:$NODE2_PORT
NODE3=http://127.0.0.1:$NODE3_PORT
EOF
    load_env
    start_ferretdb
    start_redis
    for n in 1 2 3; do start_node "$n"; done
    echo "mongo  $MONGO_URI"
    echo "redis  $REDIS_URL"
    for n in 1 2 3; do
        var="NODE$n"
        echo "node$n  ${!var}"
    done
    echo "state  $DIR (scripts/cluster.sh stop to end)"
    trap - ERR EXIT
}

cmd_status() {
    load_env
    for n in 1 2 3; do
        var="NODE$n"
        if alive "$DIR/node$n/pid"; then
            echo "node$n  ${!var}  $(curl -s "${!var}/v1/health" || echo down)"
        else
            echo "node$n  ${!var}  stopped"
        fi
    done
    alive "$DIR/redis.pid" && echo "redis  $REDIS_URL  running" || echo "redis  stopped"
    alive "$DIR/ferretdb.pid" && echo "mongo  $MONGO_URI  running" || echo "mongo  stopped"
}

cmd_stop() {
    [ -d "$DIR" ] || return 0
    # A process frozen by SIGSTOP would not act on SIGTERM.
    for f in "$DIR"/node*/pid "$DIR/redis.pid"; do
        alive "$f" && kill -CONT "$(cat "$f")" 2>/dev/null || true
    done
    for n in 1 2 3; do stop_pidfile "$DIR/node$n/pid"; done
    stop_pidfile "$DIR/redis.pid"
    stop_pidfile "$DIR/ferretdb.pid"
    rm -rf "$DIR"
}

case "${1:-}" in
start) cmd_start ;;
status) cmd_status ;;
stop) cmd_stop ;;
kill-node)
    load_env
    kill -KILL "$(cat "$DIR/node${2:?node number}/pid")"
    ;;
start-node)
    load_env
    start_node "${2:?node number}"
    ;;
restart-redis)
    load_env
    stop_redis
    rm -f "$DIR/dump.rdb"
    start_redis
    ;;
restart-mongo)
    load_env
    stop_pidfile "$DIR/ferretdb.pid"
    start_ferretdb
    ;;
stop-redis)
    load_env
    stop_redis save
    ;;
start-redis)
    load_env
    start_redis
    ;;
pause-redis)
    load_env
    kill -STOP "$(cat "$DIR/redis.pid")"
    ;;
resume-redis)
    load_env
    kill -CONT "$(cat "$DIR/redis.pid")"
    ;;
*)
    echo "usage: $0 start|status|stop|kill-node N|start-node N|" \
        "restart-redis|restart-mongo|stop-redis|start-redis|pause-redis|resume-redis" >&2
    exit 2
    ;;
esac
