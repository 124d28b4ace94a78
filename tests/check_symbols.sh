#!/bin/sh
# check_symbols.sh - every global symbol that the syncd libraries and the
# daemon define carries the syncd_ prefix.
#
# Usage: check_symbols.sh FILE... (static libraries and object files; an
# argument may be a ;-separated list, as CMake passes $<TARGET_OBJECTS>).
# Runs `nm -g --defined-only` ($NM, default nm) on each FILE and fails
# listing every defined global without the prefix. Symbols that are not
# ours are ignored: main, and what the compiler and the sanitizers add
# (names that start with an underscore or contain a dot, as __odr_asan.x).
set -eu

[ $# -gt 0 ] || {
    echo "usage: $0 FILE..." >&2
    exit 2
}
nm=${NM:-nm}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
n=0
for arg in "$@"; do
    rest=$arg
    while [ -n "$rest" ]; do
        f=${rest%%;*}
        case $rest in *\;*) rest=${rest#*;} ;; *) rest= ;; esac
        [ -n "$f" ] || continue
        n=$((n + 1))
        "$nm" -g --defined-only -A -P "$f" >>"$out" || {
            echo "check_symbols: $nm failed on $f" >&2
            exit 2
        }
    done
done
bad=$(awk '$2 != "main" && $2 !~ /^syncd_/ && $2 !~ /^_/ && $2 !~ /\./ {
    sub(/:$/, "", $1); print "  " $2 " (" $1 ")" }' "$out")
if [ -n "$bad" ]; then
    echo "check_symbols: global symbols without the syncd_ prefix:"
    echo "$bad"
    exit 1
fi
echo "check_symbols: $(wc -l <"$out") global symbols in $n files, all syncd_"
