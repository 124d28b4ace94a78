#!/usr/bin/env bash
# fresh-check.sh - run the README's two commands as a new user would: as
# root in a fresh debian:bookworm container (base image by
# scripts/base-image.sh), on a clean clone of this checkout's HEAD
# (committed state only), with ../shared mounted read-only beside it.
# First `scripts/run.sh` in the background until /v1/health answers, a
# syncctl put/get round trip through it and a SIGTERM (it must exit 0);
# then `scripts/test.sh`. Prints the wall time of each and the CTest
# summary; exits non-zero when either failed. The container and the temp
# dirs are removed whatever happens. Needs a running Docker engine; run as
# root. apt and Go downloads stay in the container, not in the clone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$(cd "$ROOT/../shared" && pwd)"
CA=/usr/local/share/ca-certificates
IMAGE=debian:bookworm
NAME="syncd-fresh-$$"
WORK=""

cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/scripts/base-image.sh"

WORK="$(mktemp -d /var/tmp/syncd-fresh.XXXXXX)"
HEAD="$(git -C "$ROOT" rev-parse HEAD)"
git clone -q "$ROOT" "$WORK/syncd"
git -C "$WORK/syncd" checkout -q --detach "$HEAD"
echo "fresh-check: $(git -C "$WORK/syncd" log --oneline -1) in a fresh $IMAGE"

# What runs in the container, from the clone's root. The container shares
# the host's network, where 127.0.0.1:7070 may belong to something else (a
# compose cluster, a developer's node), so the node listens on a free port
# set through syncd's and syncctl's own variables (SYNCD_LISTEN,
# SYNCD_SERVER); the commands stay as the README writes them. The health
# check waits for this node's own "serving" line before it asks.
read -r -d '' INNER <<'EOF' || true
set -uo pipefail
LOG=/var/tmp/fresh-logs
mkdir -p "$LOG"
fail=0

answers() { # answers PORT PATH: an HTTP 200 from 127.0.0.1:PORT
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    head -n1 <&3 | grep -q ' 200 '
    local rc=$?
    exec 3<&-
    return $rc
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
show() { echo "--- last lines of $1:"; tail -n 40 "$1"; }

PORT=17070
while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
export SYNCD_LISTEN="127.0.0.1:$PORT" SYNCD_SERVER="http://127.0.0.1:$PORT"

echo "fresh-check: scripts/run.sh (SYNCD_LISTEN=$SYNCD_LISTEN)"
start=$SECONDS
scripts/run.sh >"$LOG/run.log" 2>&1 &
pid=$!
until grep -q "serving http://$SYNCD_LISTEN " "$LOG/run.log" &&
    answers "$PORT" /v1/health; do
    if [ $((SECONDS - start)) -gt 3600 ]; then
        echo "FAIL: /v1/health did not answer within an hour"
        show "$LOG/run.log"
        exit 1
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        echo "FAIL: scripts/run.sh exited with $? before /v1/health answered"
        show "$LOG/run.log"
        exit 1
    fi
    sleep 1
done
echo "fresh-check: scripts/run.sh answered /v1/health after $((SECONDS - start)) s (setup, build, start)"
grep -E '^(setup: |go: downloading go)' "$LOG/run.log"
body='{"fresh":"debian 12","n":1}'
if echo "$body" | build/syncd/syncctl put fresh doc-1 >"$LOG/put.out" 2>&1 &&
    build/syncd/syncctl get fresh doc-1 >"$LOG/get.out" 2>&1 &&
    grep -q 'debian 12' "$LOG/get.out"; then
    echo "fresh-check: syncctl put/get round trip: $(cat "$LOG/get.out")"
else
    echo "FAIL: syncctl put/get round trip"
    cat "$LOG/put.out" "$LOG/get.out" 2>/dev/null
    fail=1
fi
kill -TERM "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "fresh-check: syncd exited 0 on SIGTERM"
else
    echo "FAIL: syncd exited $rc on SIGTERM"
    show "$LOG/run.log"
    fail=1
fi

echo "fresh-check: scripts/test.sh"
start=$SECONDS
scripts/test.sh >"$LOG/test.log" 2>&1
rc=$?
took=$((SECONDS - start))
grep -E '^ *[0-9]+/[0-9]+ Test +#' "$LOG/test.log"
sed -n '/tests passed, /,$p' "$LOG/test.log"
if [ "$rc" -eq 0 ]; then
    echo "fresh-check: scripts/test.sh passed in $took s (setup, build, tests)"
else
    echo "FAIL: scripts/test.sh exited $rc after $took s"
    if grep -q 'tests passed, ' "$LOG/test.log"; then
        echo "--- output of the failed tests:"
        awk '/^ *[0-9]+\/[0-9]+ Test +#/ { p = /\*\*\*|Failed|Timeout/ }
             /^ +Start +[0-9]+:/ { p = 0 } p' "$LOG/test.log" | tail -n 200
    else
        show "$LOG/test.log"
    fi
    fail=1
fi
exit $fail
EOF

start=$SECONDS
docker run --name "$NAME" --init --network host \
    -v "$CA:$CA:ro" \
    -v "$WORK/syncd:/src/syncd" \
    -v "$SHARED:/src/shared:ro" \
    -w /src/syncd "$IMAGE" bash -c "$INNER" &
rc=0
wait $! || rc=$?
echo "fresh-check: $((SECONDS - start)) s in the container; exit $rc"
exit "$rc"
