#!/usr/bin/env bash
# checker_test.sh - the checker can fail: each checked-in history that
# breaks the contract (tests/linz/histories/bad-*.jsonl) is reported as a
# violation in the modes it breaks, with Porcupine's visualization when the
# linearizability check fails, and a good history passes in both modes.
#
#   bad-stale-read    a read returns v1 after v2 was acknowledged: not
#                     linearizable (embedded); allowed of a cache (cluster)
#   bad-lost-update   two If-Match writes on v1 both succeed as v2
#   bad-own-write     a client reads v1 after its own write of v2
#   bad-phantom-read  a read returns a value no write produced
#   bad-read-back     a client reads v2, then v1
#   bad-put-conflict  a PUT without precondition answers 409 when its edit
#                     loop did not give up on conflicts
#
# With an init operation first (linz_record --slots: a reused document
# reset to a known state, which every node served before the epoch):
#   good-init         from init v7: a read of it, a test-and-set, an
#                     If-Match write, a delete and a re-create as v11
#   bad-init-version  a PUT after the init answers 201 v1, as if the
#                     document were new
#   bad-init-stale-read  a read returns the value the document held
#                     before the reset
#   bad-init-404      a read answers 404 after the init with no delete
#
# found-*.jsonl are violations linz_cluster found in syncd (one key's
# history up to the violation), kept as they were recorded:
#   found-ferretdb-two-v38  FerretDB claim mode, a loaded machine: node 3
#                     was SIGKILLed with a test-and-set on e0-k0 (at v37) in
#                     flight; then a DELETE and a PUT on node 2, taking 1.4
#                     and 1.2 s, were both answered 200 with version 38; the
#                     PUT is lost (node 2 then serves the tombstone: 404)
#
# Usage: tests/linz/checker_test.sh LINZCHECK
set -euo pipefail

CHECKER="${SYNCD_LINZCHECK:-${1:?usage: checker_test.sh LINZCHECK}}"
H="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/histories"
TMP="$(mktemp -d /tmp/syncd-test-linzcheck-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
[ -x "$CHECKER" ] || { echo "checker_test: no checker at $CHECKER (scripts/setup.sh builds it)" >&2; exit 1; }
passed=0
failed=0

# expect STATUS MODE HISTORY [HTML]: the checker's exit status must be
# STATUS; with HTML, the visualization must have been written.
expect() {
    local want="$1" mode="$2" file="$3" html="${4:-}" got=0
    rm -f "$TMP/v.html"
    "$CHECKER" -mode "$mode" -html "$TMP/v.html" "$H/$file" >"$TMP/out" 2>&1 || got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $file in $mode mode: exit $got, want $want" >&2
        cat "$TMP/out" >&2
        failed=$((failed + 1))
    elif [ -n "$html" ] && ! grep -q '<html' "$TMP/v.html" 2>/dev/null; then
        echo "FAIL: $file in $mode mode: no visualization written" >&2
        failed=$((failed + 1))
    else
        echo "ok: $file in $mode mode: exit $got"
        passed=$((passed + 1))
    fi
}

expect 0 embedded good.jsonl
expect 0 cluster good.jsonl
expect 1 embedded bad-stale-read.jsonl html
expect 0 cluster bad-stale-read.jsonl
expect 1 embedded bad-lost-update.jsonl html
expect 1 cluster bad-lost-update.jsonl html
expect 1 cluster bad-own-write.jsonl html
expect 1 embedded bad-own-write.jsonl html
expect 1 cluster bad-phantom-read.jsonl html
expect 1 embedded bad-phantom-read.jsonl html
expect 1 cluster bad-read-back.jsonl html
expect 1 embedded bad-read-back.jsonl html
expect 1 cluster bad-put-conflict.jsonl
expect 1 embedded bad-put-conflict.jsonl
expect 0 embedded good-init.jsonl
expect 0 cluster good-init.jsonl
expect 1 embedded bad-init-version.jsonl html
expect 1 cluster bad-init-version.jsonl html
expect 1 embedded bad-init-stale-read.jsonl html
expect 1 cluster bad-init-stale-read.jsonl html
expect 1 embedded bad-init-404.jsonl html
expect 1 cluster bad-init-404.jsonl html
expect 1 cluster found-ferretdb-two-v38.jsonl html
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
