#!/usr/bin/env bash
# test.sh - set up the machine, build syncd and run the whole test suite.
# SYNCD_SANITIZE=ON builds with AddressSanitizer and UBSan (CI does);
# SYNCD_SANITIZE=thread with ThreadSanitizer instead, in build-tsan (the two
# cannot share a build), under tests/tsan.supp; SYNCD_WERROR=ON turns
# warnings into errors. SYNCD_FUZZ_SECONDS=N then runs each fuzz target for
# N seconds (scripts/fuzz.sh; CI does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"

if [ "${SYNCD_SANITIZE:-OFF}" = thread ]; then
    BUILD="${SYNCD_BUILD_DIR:-$ROOT/build-tsan}"
else
    BUILD="${SYNCD_BUILD_DIR:-$ROOT/build}"
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSYNCD_SANITIZE="${SYNCD_SANITIZE:-OFF}" \
    -DSYNCD_WERROR="${SYNCD_WERROR:-OFF}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

export SYNCD_FERRETDB="${SYNCD_FERRETDB:-$ROOT/.tools/bin/ferretdb}"
export SYNCD_MONGO_JAVA="${SYNCD_MONGO_JAVA:-$ROOT/.tools/bin/mongo-java-server}"
export SYNCD_TESTDATA="${SYNCD_TESTDATA:-$ROOT/../shared/testdata}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# Every child a test forks execs at once (the crash tests re-run their own
# binary in a child mode), so TSan's die_after_fork stays on.
export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$ROOT/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1}"
cd "$BUILD"
ctest --output-on-failure --timeout 900 "$@"
if [ "${SYNCD_FUZZ_SECONDS:-0}" != 0 ]; then
    "$ROOT/scripts/fuzz.sh" "$SYNCD_FUZZ_SECONDS"
fi
