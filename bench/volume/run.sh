#!/bin/sh
# run.sh - volume scan against sha256sum, and a re-push with one changed
# file, on a generated tree (bench/README.md, "Volumes").
#
# Builds syncd and syncctl (Release, no sanitizers), writes FILES files of
# random bytes totalling BYTES into 10 folder volumes (indexes made by
# `syncctl volume init`), then in the same run with a warm page cache:
#   - sha256sum over the same files, one process (what a user would run),
#     and two processes (xargs -P2), as peers;
#   - `syncctl volume scan` (every file hashed, both cores);
#   - `syncctl volume push` into an embedded syncd: a first push (every
#     file hashed), then one file rewritten (and its volume's index made
#     again, not timed) and a second push, which rereads only that file.
#
# Usage: bench/volume/run.sh   (FILES=10000 BYTES=1073741824 by default;
#        BYTES=104857600 for a quick run)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SYNCD_BENCH_BUILD:-$ROOT/build-bench}
FILES=${FILES:-10000}
BYTES=${BYTES:-1073741824}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_scratch volume

bench_build "$BUILD" syncd syncctl
SYNCCTL="$BUILD/syncd/syncctl"
export XDG_CACHE_HOME="$TMP/cache"

# now: seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
# cpu_of OUT CMD...: runs CMD with stdout to OUT; prints the CPU seconds
# (user + system) it used, which the machine's load does not inflate.
cpu_of() {
    python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.3f" % (r.ru_utime + r.ru_stime))' "$@"
}
# rate A B N: prints N/(B-A) with one decimal.
rate() { python3 -c "import sys; a,b,n=map(float,sys.argv[1:]); print('%.1f' % (n/(b-a)))" "$@"; }
secs() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print('%.3f' % (b-a))" "$@"; }

python3 - "$TMP/vols" "$FILES" "$BYTES" <<'PY'
import os, sys
root, files, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = total // files
for i in range(files):
    d = os.path.join(root, "v%02d" % (i % 10), "d%02d" % (i // 10 % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(size))
PY
for v in "$TMP"/vols/v*; do
    "$SYNCCTL" volume init "$v" >/dev/null
done
(cd "$TMP/vols" && find . -name '*.bin' | sort >"$TMP/list")
MB=$(python3 -c "print($BYTES / 1e6)")

# Warm the page cache so that every tool reads from memory.
(cd "$TMP/vols" && xargs cat <"$TMP/list" >/dev/null)

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $FILES files, $BYTES bytes"
echo "| tool | seconds | MB/s | files/s |"
echo "|---|---|---|---|"
a=$(now)
(cd "$TMP/vols" && xargs sha256sum <"$TMP/list" >/dev/null)
b=$(now)
echo "| sha256sum (1 process) | $(secs "$a" "$b") | $(rate "$a" "$b" "$MB") | $(rate "$a" "$b" "$FILES") |"
a=$(now)
(cd "$TMP/vols" && xargs -P2 -n $((FILES / 2 + 1)) sha256sum <"$TMP/list" >/dev/null)
b=$(now)
echo "| sha256sum (xargs -P2) | $(secs "$a" "$b") | $(rate "$a" "$b" "$MB") | $(rate "$a" "$b" "$FILES") |"
a=$(now)
cpu=$(cpu_of /dev/null "$SYNCCTL" volume scan "$TMP/vols")
b=$(now)
echo "| syncctl volume scan | $(secs "$a" "$b") (CPU $cpu) | $(rate "$a" "$b" "$MB") | $(rate "$a" "$b" "$FILES") |"

PORT=$(free_port)
"$BUILD/syncd/syncd" --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" \
    >"$TMP/syncd.log" 2>&1 &
PID=$!
up() { curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/health"; }
wait_up syncd "$PID" "$TMP/syncd.log" 100 0.1 up
S="http://127.0.0.1:$PORT"
a=$(now)
"$SYNCCTL" --server "$S" volume push volumes bench "$TMP/vols" >/dev/null
b=$(now)
echo "| syncctl volume push, first | $(secs "$a" "$b") | $(rate "$a" "$b" "$MB") | $(rate "$a" "$b" "$FILES") |"
F=$(head -1 "$TMP/list")
python3 -c "import os,sys; open(sys.argv[1],'r+b').write(os.urandom(64))" "$TMP/vols/$F"
V=$(echo "$F" | cut -d/ -f2)
rm "$TMP/vols/$V/volume-index.json"
"$SYNCCTL" volume init "$TMP/vols/$V" >/dev/null
a=$(now)
cpu=$(cpu_of "$TMP/push2.json" "$SYNCCTL" --server "$S" volume push volumes bench "$TMP/vols")
b=$(now)
echo "| syncctl volume push, one file changed | $(secs "$a" "$b") (CPU $cpu) | | |"
echo "# second push: $(cat "$TMP/push2.json")"
