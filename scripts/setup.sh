#!/usr/bin/env bash
# setup.sh - install everything syncd's build, tests and benchmarks need on
# a Debian 12 machine (run as root), and build FerretDB, the MongoDB
# wire-compatible test server, into .tools/bin. Does nothing that is
# already done, so it is cheap to run before every build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(build-essential cmake pkg-config git ca-certificates
    libjansson-dev libuv1-dev libcmocka-dev libmongoc-dev libbson-dev
    libhiredis-dev librocksdb-dev libhttp-parser-dev libcurl4-openssl-dev
    libssl-dev libarchive-dev zlib1g-dev redis-server redis-tools clang-format python3 python3-jsonpatch
    etcd-server etcd-client wrk curl)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
fi

# The packaged Redis and etcd must not hold the ports or data tests use.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server etcd >/dev/null 2>&1 || true
fi

# FerretDB: built from the Go module proxy with the recipe checked in as
# tests/tools (go.mod, go.sum). Vendoring lets us supply the version file
# that FerretDB's build normally generates.
FERRETDB="$ROOT/.tools/bin/ferretdb"
if [ ! -x "$FERRETDB" ]; then
    GO="$(command -v go || true)"
    [ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
    if [ -z "$GO" ]; then
        apt-get install -y -q --no-install-recommends golang-go
        GO="$(command -v go)"
    fi
    echo "setup: building FerretDB into $FERRETDB" >&2
    (
        cd "$ROOT/tests/tools"
        export GOTOOLCHAIN=auto GOFLAGS=-mod=mod
        "$GO" mod download
        "$GO" mod vendor
        echo v1.24.2 >vendor/github.com/FerretDB/FerretDB/build/version/version.txt
        mkdir -p "$ROOT/.tools/bin"
        GOFLAGS=-mod=vendor "$GO" build -o "$FERRETDB" \
            github.com/FerretDB/FerretDB/cmd/ferretdb
        rm -rf vendor
    )
fi
