#!/usr/bin/env bash
# run.sh - the patch benchmark: syncd's diff against fast-json-patch (npm)
# and Python's jsonpatch (Debian python3-jsonpatch), in the same run, on
# generated volume-collection-like documents of 1k, 10k and 50k entries.
#
# Prints a Markdown table: per size and tool, the median diff time from
# parsed documents, the whole-process time (load both files, diff, write
# the patch), the operation count, the patch size, whether the patch
# reproduces the target, and the minimal operation count.
#
# Environment: SIZES (default "1000 10000 50000"), RUNS (default 5),
# PY_RUNS (default 3; python's jsonpatch is slow), SYNCD_BENCH_BUILD (an
# existing Release build dir with bench_patch and syncctl; default: build
# one in build-bench/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/patch"
TMP="$ROOT/bench/results/tmp"
SIZES="${SIZES:-1000 10000 50000}"
RUNS="${RUNS:-5}"
PY_RUNS="${PY_RUNS:-3}"
PY=/usr/bin/python3

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
"$PY" -c 'import jsonpatch' 2>/dev/null || need_apt+=(python3-jsonpatch)
if [ "${#need_apt[@]}" -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -d "$ROOT/bench/node_modules/fast-json-patch" ]; then
    npm install --silent --no-save --no-package-lock --no-audit --no-fund \
        --prefix "$ROOT/bench" fast-json-patch@3.1.1 >/dev/null
fi

BUILD="${SYNCD_BENCH_BUILD:-}"
if [ -z "$BUILD" ]; then
    BUILD="$ROOT/build-bench"
    # shellcheck source=bench/lib.sh
    . "$ROOT/bench/lib.sh"
    bench_build "$BUILD" bench_patch syncctl
fi

mkdir -p "$TMP"

# wall_ms CMD... runs CMD once and prints its wall-clock time in ms.
wall_ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

# row SIZE MINIMAL WHOLE_MS RESULT_JSON prints one table row.
row() {
    "$PY" - "$1" "$2" "$3" "$4" <<'PYEOF'
import json, sys
n, minimal, whole, r = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print("| %s | %s | %.1f | %s | %d | %d | %s | %s |" % (
    n, r["tool"], r["diff_ms"], whole, r["ops"], r["patch_bytes"],
    "yes" if r["reproduces"] else "no", minimal))
PYEOF
}

echo "| entries | tool | diff ms (median) | whole process ms | ops | patch bytes | reproduces | minimal ops |"
echo "|---|---|---|---|---|---|---|---|"
for n in $SIZES; do
    "$PY" "$HERE/gen.py" "$n" "$TMP"
    a="$TMP/a-$n.json" b="$TMP/b-$n.json"
    minimal=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["minimal_ops"])' "$TMP/meta-$n.json")

    r=$("$BUILD/bench/bench_patch" "$a" "$b" "$RUNS")
    w=$(wall_ms sh -c '"$1" diff "$2" "$3" >"$4"' _ "$BUILD/syncd/syncctl" "$a" "$b" "$TMP/p-syncd.json")
    row "$n" "$minimal" "$w" "$r"

    r=$(node "$HERE/fjp.js" bench "$a" "$b" "$RUNS")
    w=$(wall_ms node "$HERE/fjp.js" once "$a" "$b" "$TMP/p-fjp.json")
    row "$n" "$minimal" "$w" "$r"

    r=$("$PY" "$HERE/jp.py" bench "$a" "$b" "$PY_RUNS")
    w=$(wall_ms "$PY" "$HERE/jp.py" once "$a" "$b" "$TMP/p-py.json")
    row "$n" "$minimal" "$w" "$r"
done
