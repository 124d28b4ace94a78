#!/bin/bash
# run.sh - build bench_bus (Release, no sanitizers) and run it: it starts
# its own redis-server and FerretDB on free loopback ports, measures bare
# Redis pub/sub, syncd bus-to-bus and syncd node-to-node latency and the
# bytes of a one-volume change, prints the tables of bench/README.md
# ("Change bus"), then stops the servers and removes its temp dirs.
#
# Usage: bench/bus/run.sh [bench_bus flags]
#   (defaults: --count 10000 --chunk 1000 --rate 1000 --window 16 --docs 10
#    --entries 50 --writers 4 --live 2000 --big-edits 10; --split 1 runs
#    the reader node on a loop and thread of its own)
# SYNCD_BENCH_BUILD=DIR picks the build dir (default build-benchb);
# SYNCD_TEST_MONGO_URI=URI uses an outside FerretDB/MongoDB instead.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-benchb}

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_build "$BUILD" bench_bus

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(redis-server --version | cut -d' ' -f1-3), FerretDB $("$ROOT/.tools/bin/ferretdb" --version 2>/dev/null | head -1 | cut -d' ' -f2), hiredis $(pkg-config --modversion hiredis), libuv $(pkg-config --modversion libuv)"
cd "$ROOT"
# FerretDB's client warnings (it lacks endSessions) are noise here.
"$BUILD/bench/bench_bus" "$@" 2> >(grep -v endSessions >&2)
echo "# done $(date -u +%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
