#!/bin/sh
# run.sh - cached GET of a 1 KB document: syncd against nginx serving the
# same bytes as a static file, in the same run.
#
# Builds syncd in Release mode without sanitizers, starts a private syncd
# (embedded default, temp data dir) and writes one 1 KB document, reads it
# once (which leaves its serialized body in the in-memory tier) and saves
# the body syncd serves into a file that a private nginx (one worker,
# access log off, keep-alive unbounded, as syncd) serves under the same
# URL path. Then `wrk -t2 -c32` runs against each, alternating, ROUNDS
# times, and a Markdown table gives each round's rates, the ratio and the
# servers' CPU. Both servers run on free loopback ports and are stopped at
# the end; the temp dir is removed.
#
# Requirements (Debian): apt-get install nginx-light wrk
# Usage: bench/get/run.sh
# Environment: SECONDS_PER_CELL (default 10), ROUNDS (default 3),
# SYNCD_BENCH_BUILD (default build-benchd), SYNCD_BIN (a syncd binary to
# measure instead of building one, e.g. an earlier commit's).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-benchd}
SECS=${SECONDS_PER_CELL:-10}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d /tmp/syncd-bench-get-XXXXXX)
SYNCD_PID=
NGINX_PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    stop_pid "$SYNCD_PID"
    stop_pid "$NGINX_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "run.sh: $tool is missing (apt-get install nginx-light wrk curl)" >&2
        exit 1
    }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TICK=$(getconf CLK_TCK)

# cpu_ticks PID: user+system clock ticks PID has used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# cell PID URL: one wrk run; prints "REQ_PER_SEC CPU% CPU_US_PER_REQUEST"
# (the server's CPU time per answered request, which a loaded machine
# distorts less than the rate).
cell() {
    before=$(cpu_ticks "$1")
    rate=$(wrk -t2 -c32 -d"${SECS}s" "$2" |
        awk '/^Requests\/sec:/ { print $2 }')
    after=$(cpu_ticks "$1")
    awk -v r="$rate" -v t="$((after - before))" -v hz="$TICK" -v s="$SECS" \
        'BEGIN { printf "%.0f %.0f%% %.1f\n", r, 100 * t / hz / s,
                 1e6 * t / hz / (r * s) }'
}

if [ -z "${SYNCD_BIN:-}" ]; then
    bench_build "$BUILD" syncd
    SYNCD_BIN=$BUILD/syncd/syncd
fi

SYNCD=127.0.0.1:$(free_port)
NGINX_ADDR=127.0.0.1:$(free_port)
DOC_PATH=/v1/collections/bench/docs/get-1k
"$SYNCD_BIN" --data-dir "$TMP/syncd" --listen "$SYNCD" \
    --log-level warn --max-connections-per-client 1024 \
    >"$TMP/syncd.log" 2>&1 &
SYNCD_PID=$!
wait_up syncd "$SYNCD_PID" "$TMP/syncd.log" 100 0.1 \
    curl -sf -o /dev/null "http://$SYNCD/v1/health"

# A 1 KB document: 20 members of about 50 bytes.
python3 -c 'import json
print(json.dumps({"k%02d" % i: "v" * 40 for i in range(20)},
                 separators=(",", ":")))' >"$TMP/body.json"
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' \
    --data-binary "@$TMP/body.json" "http://$SYNCD$DOC_PATH"
mkdir -p "$TMP/www$(dirname "$DOC_PATH")"
curl -sf -o "$TMP/www$DOC_PATH" "http://$SYNCD$DOC_PATH"
BYTES=$(wc -c <"$TMP/www$DOC_PATH")
# nginx started as root serves files as an unprivileged worker.
chmod -R a+rX "$TMP"

cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path $TMP/nginx-tmp;
    proxy_temp_path $TMP/nginx-tmp;
    fastcgi_temp_path $TMP/nginx-tmp;
    uwsgi_temp_path $TMP/nginx-tmp;
    scgi_temp_path $TMP/nginx-tmp;
    server {
        listen $NGINX_ADDR;
        root $TMP/www;
    }
}
CONF
mkdir -p "$TMP/nginx-tmp"
"$NGINX" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" \
    >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
wait_up nginx "$NGINX_PID" "$TMP/nginx.log" 100 0.1 \
    curl -sf -o /dev/null "http://$NGINX_ADDR$DOC_PATH"
# The worker serves; the master only waits.
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
curl -sf "http://$NGINX_ADDR$DOC_PATH" | cmp -s - "$TMP/www$DOC_PATH" || {
    echo "run.sh: syncd and nginx do not serve the same bytes" >&2
    exit 1
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores" \
    "($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))," \
    "load $(cut -d ' ' -f 1-3 /proc/loadavg), kernel $(uname -r)"
echo "# syncd $SYNCD_BIN" \
    "($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')," \
    "embedded default), nginx $("$NGINX" -v 2>&1 | sed 's|.*/||')" \
    "(1 worker), wrk $(wrk -v 2>&1 | sed -n '1s/^wrk \([^ ]*\).*/\1/p')" \
    "-t2 -c32, ${SECS}s per cell, $BYTES-byte body"
echo
echo "| round | syncd GET/s | syncd CPU | syncd CPU µs/GET | nginx GET/s | nginx CPU | nginx CPU µs/GET | syncd / nginx |"
echo "|---|---|---|---|---|---|---|---|"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    # Alternate which server goes first.
    if [ $((r % 2)) -eq 1 ]; then
        s=$(cell "$SYNCD_PID" "http://$SYNCD$DOC_PATH")
        n=$(cell "$NGINX_WORKER" "http://$NGINX_ADDR$DOC_PATH")
    else
        n=$(cell "$NGINX_WORKER" "http://$NGINX_ADDR$DOC_PATH")
        s=$(cell "$SYNCD_PID" "http://$SYNCD$DOC_PATH")
    fi
    set -- $s $n
    echo "| $r | $1 | $2 | $3 | $4 | $5 | $6 |" \
        "$(awk -v a="$1" -v b="$4" 'BEGIN { printf "%.2fx", a / b }') |"
    r=$((r + 1))
done
