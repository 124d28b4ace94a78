#!/usr/bin/env bash
# run.sh - set up the machine, build syncd, and start one node in the
# embedded default (RocksDB store of record in ./data, in-process bus) on
# 127.0.0.1:7070. Extra arguments go to syncd (see `syncd --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
BUILD="${SYNCD_BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target syncd syncctl

echo "syncctl diff of the shipped example (examples/refs-v1.json -> refs-v2.json):"
"$BUILD/syncd/syncctl" diff "$ROOT/examples/refs-v1.json" "$ROOT/examples/refs-v2.json"
echo
exec "$BUILD/syncd/syncd" --data-dir "${SYNCD_DATA_DIR:-$ROOT/data}" "$@"
