#!/usr/bin/env bash
# syncctl_offline.sh - checks the offline syncctl commands on the shipped
# examples: diff and apply (JSON Patch and Merge Patch) round-trip, a
# failing patch exits 1 naming the failing operation, usage errors exit 2.
# The two inputs load in parallel: stdin for either or both, an error in
# either or both (the first input's error is the one reported) and a large
# document round trip check that.
# Usage: tests/syncctl_offline.sh PATH/TO/syncctl (run from the source root).
set -uo pipefail

SYNCCTL="$1"
V1=examples/refs-v1.json
V2=examples/refs-v2.json
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
failures=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# expect_exit WANT NAME CMD... runs CMD with stdout in $T/out and stderr in
# $T/err and checks its exit status.
expect_exit() {
    local want="$1" name="$2" got
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "$name: exit $got, want $want ($(cat "$T/err"))"
}

expect_stderr() {
    grep -qF -- "$2" "$T/err" || fail "$1: stderr lacks '$2': $(cat "$T/err")"
    [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$1: stderr is not one line"
}

echo '[]' >"$T/empty.json"
expect_exit 0 "canonical v2" "$SYNCCTL" apply "$V2" "$T/empty.json"
cp "$T/out" "$T/v2.canonical"

for mode in "" --merge; do
    expect_exit 0 "diff $mode" "$SYNCCTL" diff "$V1" "$V2" $mode
    cp "$T/out" "$T/patch.json"
    expect_exit 0 "apply $mode" "$SYNCCTL" apply "$V1" "$T/patch.json" $mode
    cmp -s "$T/out" "$T/v2.canonical" || fail "apply $mode does not give v2"
done

expect_exit 0 "diff" "$SYNCCTL" diff "$V1" "$V2"
want='{"op":"replace","path":"/volumes/hg38/size","value":3298}'
grep -qF "$want" "$T/out" || fail "diff lacks the deepest-path change $want"
cp "$T/out" "$T/json-patch.json"
grep -qF '{"op":"remove","path":"/volumes/grch37"}' "$T/out" ||
    fail "diff lacks the removal of grch37"
[ "$(grep -o '"op"' "$T/out" | wc -l)" -eq 7 ] || fail "diff is not 7 ops"

cat >"$T/bad.json" <<'JSON'
[{"op":"replace","path":"/name","value":"x"},
 {"op":"remove","path":"/volumes/nope"}]
JSON
expect_exit 1 "failing patch" "$SYNCCTL" apply "$V1" "$T/bad.json"
expect_stderr "failing patch" "operation 1 (remove /volumes/nope): member not found"
[ -s "$T/out" ] && fail "failing patch printed a document"

echo '[{"op":"test","path":"/name","value":"other"}]' >"$T/test.json"
expect_exit 1 "failing test op" "$SYNCCTL" apply "$V1" "$T/test.json"
expect_stderr "failing test op" "operation 0 (test /name): value differs"

echo '{"name":null,"kind":"VolumeCollection"}' >"$T/nulls.json"
expect_exit 1 "merge diff to a null" "$SYNCCTL" diff "$V1" "$T/nulls.json" --merge
expect_stderr "merge diff to a null" '"/name"'

expect_exit 1 "missing file" "$SYNCCTL" diff "$V1" "$T/absent.json"
expect_stderr "missing file" "$T/absent.json"
echo '{"a":' >"$T/broken.json"
expect_exit 1 "malformed JSON" "$SYNCCTL" apply "$T/broken.json" "$T/empty.json"
expect_stderr "malformed JSON" "$T/broken.json:"

expect_exit 0 "diff from stdin" "$SYNCCTL" diff - "$V2" <"$V1"
cmp -s "$T/out" "$T/json-patch.json" || fail "diff - B <A differs from diff A B"
expect_exit 0 "apply a patch from stdin" "$SYNCCTL" apply "$V1" - <"$T/json-patch.json"
cmp -s "$T/out" "$T/v2.canonical" || fail "apply A - <P does not give v2"
expect_exit 1 "both inputs on stdin" "$SYNCCTL" diff - - <"$V1"
expect_stderr "both inputs on stdin" "-:1:0: unexpected token near end of file"

expect_exit 1 "second input malformed" "$SYNCCTL" diff "$V1" "$T/broken.json"
expect_stderr "second input malformed" "$T/broken.json:2:0:"
expect_exit 1 "both inputs bad" "$SYNCCTL" diff "$T/absent.json" "$T/broken.json"
expect_stderr "both inputs bad" "$T/absent.json:-1:-1: unable to open $T/absent.json"
expect_exit 1 "stdin bad, file bad" "$SYNCCTL" diff - "$T/absent.json" <"$T/broken.json"
expect_stderr "stdin bad, file bad" "-:2:0: unexpected token near end of file"

awk 'BEGIN { printf "{\"items\":["; for (i = 0; i < 20000; i++)
    printf "%s{\"i\":%d,\"s\":\"caf\\u00e9 %d\",\"r\":%d.5}", i ? "," : "", i, i, i
    printf "]}" }' >"$T/big-a.json"
sed -e 's/"i":77,/"i":-77,/' -e 's/{"i":500,[^}]*},//' "$T/big-a.json" >"$T/big-b.json"
expect_exit 0 "canonical big b" "$SYNCCTL" apply "$T/big-b.json" "$T/empty.json"
cp "$T/out" "$T/big-b.canonical"
expect_exit 0 "diff big" "$SYNCCTL" diff "$T/big-a.json" "$T/big-b.json"
cp "$T/out" "$T/big-patch.json"
[ "$(grep -o '"op"' "$T/big-patch.json" | wc -l)" -eq 2 ] || fail "big diff is not 2 ops"
expect_exit 0 "apply big" "$SYNCCTL" apply "$T/big-a.json" "$T/big-patch.json"
cmp -s "$T/out" "$T/big-b.canonical" || fail "apply big does not give big b"

expect_exit 2 "no command" "$SYNCCTL"
expect_exit 2 "unknown command" "$SYNCCTL" frobnicate
expect_exit 2 "one file" "$SYNCCTL" diff "$V1"
expect_exit 2 "three files" "$SYNCCTL" apply "$V1" "$V2" "$V2"
expect_exit 2 "unknown flag" "$SYNCCTL" diff "$V1" "$V2" --bogus
expect_exit 0 "help" "$SYNCCTL" --help

if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "syncctl offline: all checks passed"
