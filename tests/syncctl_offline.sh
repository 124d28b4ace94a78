#!/usr/bin/env bash
# syncctl_offline.sh - checks the offline syncctl commands on the shipped
# examples: diff and apply (JSON Patch and Merge Patch) round-trip, a
# failing patch exits 1 naming the failing operation, usage errors exit 2.
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
