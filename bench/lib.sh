# lib.sh - helpers shared by the bench/*/run.sh scripts (POSIX sh).
#
# Source it after setting ROOT: . "$ROOT/bench/lib.sh"

# shellcheck source=scripts/ports.sh
. "$ROOT/scripts/ports.sh"

# bench_build BUILD TARGET...: configures BUILD as a Release build without
# sanitizers and builds the given targets, quietly.
bench_build() {
    bench_dir=$1
    shift
    cmake -S "$ROOT" -B "$bench_dir" -DCMAKE_BUILD_TYPE=Release \
        -DSYNCD_SANITIZE=OFF >/dev/null
    cmake --build "$bench_dir" -j2 --target "$@" >/dev/null
}

# stop_pid PID: kills and reaps PID; does nothing if PID is empty.
stop_pid() {
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

# bench_scratch NAME: sets TMP to a new scratch directory and PID to
# empty, and has the script stop PID (once the script sets it) and remove
# TMP however it ends.
bench_scratch() {
    TMP=$(mktemp -d "/tmp/syncd-bench-$1-XXXXXX")
    PID=
    trap 'stop_pid "$PID"; rm -rf "$TMP"' EXIT INT TERM
}

# wait_up NAME PID LOG TRIES DELAY CMD...: runs CMD every DELAY seconds
# until it succeeds; exits 1 with LOG on stderr after TRIES failures or
# when PID has died.
wait_up() {
    name=$1 pid=$2 log=$3 tries=$4 delay=$5
    shift 5
    i=0
    until "$@"; do
        i=$((i + 1))
        if [ "$i" -gt "$tries" ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "$name did not start; log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep "$delay"
    done
}
