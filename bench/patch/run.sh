#!/usr/bin/env bash
# run.sh - the patch benchmark: syncd's diff against fast-json-patch (npm),
# cJSON_Utils (C, Debian's cjson) and Python's jsonpatch (Debian
# python3-jsonpatch), in the same run, on generated volume-collection-like
# documents of 1k, 10k and 50k entries.
#
# Prints a Markdown table: per size and tool, the median diff time from
# parsed documents, the whole-process time (load both files, diff, write
# the patch; median of WHOLE_RUNS processes), the operation count, the patch size, whether the patch
# reproduces the target, and the minimal operation count.
#
# Environment: SIZES (default "1000 10000 50000"), RUNS (default 5),
# PY_RUNS (default 3; python's jsonpatch is slow), WHOLE_RUNS (default 3),
# SYNCD_BENCH_BUILD (an
# existing Release build dir with bench_patch and syncctl; default: build
# one in build-bench/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/patch"
TMP="$ROOT/bench/results/tmp"
SIZES="${SIZES:-1000 10000 50000}"
RUNS="${RUNS:-5}"
PY_RUNS="${PY_RUNS:-3}"
WHOLE_RUNS="${WHOLE_RUNS:-3}"
PY=/usr/bin/python3

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
"$PY" -c 'import jsonpatch' 2>/dev/null || need_apt+=(python3-jsonpatch)
dpkg -s libcjson-dev >/dev/null 2>&1 || need_apt+=(libcjson-dev)
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

# libcjson-dev ships cJSON but not cJSON_Utils: take cJSON_Utils.c from the
# Debian source package of the installed libcjson1, fetched by apt-get with
# a private deb-src list (the system's apt configuration is left alone).
CJSON_SRC="$TMP/cjson-src"
if [ ! -f "$CJSON_SRC/cJSON_Utils.c" ]; then
    ver=$(dpkg-query -W -f='${Version}' libcjson1)
    . /etc/os-release
    apt_dir="$TMP/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/get"
    for suite in "$VERSION_CODENAME" "$VERSION_CODENAME-updates"; do
        echo "deb-src http://deb.debian.org/debian $suite main"
    done >"$apt_dir/sources.list"
    echo "deb-src http://deb.debian.org/debian-security $VERSION_CODENAME-security main" \
        >>"$apt_dir/sources.list"
    apt_src=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$apt_dir/lists")
    apt-get "${apt_src[@]}" update -qq >/dev/null
    (cd "$apt_dir/get" && apt-get "${apt_src[@]}" source -qq "cjson=$ver" \
        >/dev/null 2>&1)
    mv "$apt_dir/get/cjson-${ver%%-*}" "$CJSON_SRC"
fi
cc -O2 -I"$CJSON_SRC" -o "$TMP/cjson_diff" "$HERE/cjson_diff.c" \
    "$CJSON_SRC/cJSON_Utils.c" -lcjson

# wall_ms CMD... runs CMD WHOLE_RUNS times and prints the median
# wall-clock time in ms.
wall_ms() {
    local t0 t1 i
    for ((i = 0; i < WHOLE_RUNS; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000))
    done | sort -n | sed -n "$(((WHOLE_RUNS + 1) / 2))p"
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

    r=$("$TMP/cjson_diff" bench "$a" "$b" "$RUNS")
    w=$(wall_ms "$TMP/cjson_diff" once "$a" "$b" "$TMP/p-cjson.json")
    row "$n" "$minimal" "$w" "$r"

    r=$("$PY" "$HERE/jp.py" bench "$a" "$b" "$PY_RUNS")
    w=$(wall_ms "$PY" "$HERE/jp.py" once "$a" "$b" "$TMP/p-py.json")
    row "$n" "$minimal" "$w" "$r"
done
