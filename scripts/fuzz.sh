#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets of tests/fuzz with clang
# (-fsanitize=fuzzer,address,undefined, in a build folder of their own) and
# run each for SECONDS (default 30), one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds: tests/fuzz/corpus/<target>/ and, for the JSON targets, the
# conformance vectors of ../shared/testdata (or $SYNCD_TESTDATA), read in
# place. What a run learns goes to $BUILD/fuzz/corpus/<target>/ (kept
# between runs); a crash, leak, timeout or broken invariant stops that
# target, keeps its input as $BUILD/fuzz/crashes/<target>-crash-<sha1>
# and makes the script exit 1 after the other targets ran. Copy such an
# input into tests/fuzz/corpus/<target>/ so that ctest replays it (see
# tests/fuzz/README.md). The last line per target gives executions and
# coverage (cov: edges, ft: features).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-30}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] ||
    TARGETS=(pointer patch merge diff load event config volume http)
BUILD="${SYNCD_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
TESTDATA="${SYNCD_TESTDATA:-$ROOT/../shared/testdata}"
NICE="${SYNCD_FUZZ_NICE:-10}"
CC_FUZZ="${SYNCD_FUZZ_CC:-clang-14}"

command -v "$CC_FUZZ" >/dev/null ||
    { echo "fuzz: $CC_FUZZ not found (scripts/setup.sh installs it)" >&2; exit 1; }
CC="$CC_FUZZ" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSYNCD_FUZZ=ON -DSYNCD_SANITIZE=OFF >/dev/null
nice -n "$NICE" cmake --build "$BUILD" -j"$(nproc)" --target syncd_fuzz

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
for t in "${TARGETS[@]}"; do
    bin="$BUILD/tests/fuzz/fuzz_$t"
    [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; exit 2; }
    work="$BUILD/fuzz/corpus/$t"
    mkdir -p "$work" "$BUILD/fuzz/crashes" "$BUILD/fuzz/logs"
    seeds=("$ROOT/tests/fuzz/corpus/$t")
    max_len=4096
    case "$t" in
    pointer | patch | merge | diff)
        [ -d "$TESTDATA" ] ||
            { echo "fuzz: no test data at $TESTDATA" >&2; exit 1; }
        seeds+=("$TESTDATA")
        max_len=20000
        ;;
    http) max_len=8192 ;;
    esac
    log="$BUILD/fuzz/logs/$t.log"
    echo "fuzz: $t for ${SECONDS_EACH}s (log $log)" >&2
    if (cd "$BUILD/fuzz" && nice -n "$NICE" "$bin" \
        -max_total_time="$SECONDS_EACH" -max_len="$max_len" -timeout=30 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$BUILD/fuzz/crashes/$t-" \
        "$work" "${seeds[@]}") >"$log" 2>&1; then
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 |
            sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p')"
        echo "fuzz: $t ok: ${execs:-?} executions, ${last:-no coverage line}"
    else
        echo "fuzz: $t FAILED; the end of $log:" >&2
        grep -E 'ERROR|SUMMARY|invariant|Test unit written' "$log" | tail -n 8 >&2 || true
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]} (inputs in $BUILD/fuzz/crashes)" >&2
    exit 1
fi
