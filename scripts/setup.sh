#!/usr/bin/env bash
# setup.sh - install everything syncd's build, tests and benchmarks need on
# a Debian 12 machine (run as root), and build the two MongoDB
# wire-compatible test servers, FerretDB and mongo-java-server, into
# .tools/. Does nothing that is already done, so it is cheap to run before
# every build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(build-essential cmake pkg-config git ca-certificates
    libjansson-dev libuv1-dev libcmocka-dev libmongoc-dev libbson-dev
    libhiredis-dev librocksdb-dev libhttp-parser-dev libcurl4-openssl-dev
    libssl-dev libarchive-dev zlib1g-dev redis-server redis-tools clang-format python3 python3-jsonpatch
    etcd-server etcd-client wrk curl openssl stunnel4 default-jdk-headless
    maven clang-14 libfuzzer-14-dev libclang-rt-14-dev
    gnuplot-nox chromium chromium-driver python3-selenium)

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

# A Go for the FerretDB recipe. tests/tools/go.mod needs Go 1.24, which
# Debian 12 does not ship; any Go from 1.21 on fetches the toolchain that
# go.mod names from the Go module proxy (GOTOOLCHAIN=auto). Use such a Go
# when the machine has one; otherwise install golang-1.23-go from Debian's
# bookworm-backports, pinned so that nothing else comes from there
# (Debian's own golang-go is 1.19, too old to switch toolchains).
find_go() {
    local g m
    for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go-1.23/bin/go; do
        [ -n "$g" ] && [ -x "$g" ] || continue
        m="$(GOTOOLCHAIN=local "$g" env GOVERSION 2>/dev/null |
            sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
        if [ -n "$m" ] && [ "$m" -ge 21 ]; then
            echo "$g"
            return 0
        fi
    done
    return 1
}

install_backports_go() {
    local list=/etc/apt/sources.list.d/bookworm-backports.sources
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list \
        /etc/apt/sources.list.d/; then
        echo "setup: adding Debian's bookworm-backports as $list" >&2
        cat >"$list" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    cat >/etc/apt/preferences.d/syncd-golang-backports <<EOF
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 50

Package: golang-1.23 golang-1.23-go golang-1.23-src
Pin: release n=bookworm-backports
Pin-Priority: 500
EOF
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends golang-1.23-go
}

# ensure_go: sets GO to a Go of 1.21 or later, installing one when needed.
GO=""
ensure_go() {
    [ -n "${GO:-}" ] && return 0
    GO="$(find_go || true)"
    if [ -z "$GO" ]; then
        [ "$(id -u)" -eq 0 ] || {
            echo "setup: no Go >= 1.21; run as root to install golang-1.23-go" >&2
            exit 1
        }
        install_backports_go
        GO="$(find_go)"
    fi
}

# FerretDB: built from the Go module proxy with the recipe checked in as
# tests/tools (go.mod, go.sum). Vendoring lets us supply the version file
# that FerretDB's build normally generates.
FERRETDB="$ROOT/.tools/bin/ferretdb"
if [ ! -x "$FERRETDB" ]; then
    ensure_go
    echo "setup: building FerretDB into $FERRETDB with $GO" >&2
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

# mongo-java-server: its jars from Maven Central (the pom in
# tests/tools/mongo-java-server; Maven's own cache in .tools/m2) and the
# lines of Java that start it,
# compiled with javac, behind the launcher .tools/bin/mongo-java-server PORT.
# Rebuilt only when the pom or the Java source changes.
MJS_SRC="$ROOT/tests/tools/mongo-java-server"
MJS="$ROOT/.tools/mongo-java-server"
MJS_BIN="$ROOT/.tools/bin/mongo-java-server"
mjs_stamp="$(cat "$MJS_SRC/pom.xml" "$MJS_SRC/SyncdMongoJavaServer.java" |
    sha256sum | cut -d' ' -f1)"
if [ ! -x "$MJS_BIN" ] || [ "$(cat "$MJS/stamp" 2>/dev/null)" != "$mjs_stamp" ]; then
    echo "setup: building mongo-java-server into $MJS" >&2
    rm -rf "$MJS"
    mkdir -p "$MJS/classes" "$ROOT/.tools/bin"
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$ROOT/.tools/m2" \
        -f "$MJS_SRC/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$MJS/lib"
    javac -d "$MJS/classes" -cp "$MJS/lib/*" "$MJS_SRC/SyncdMongoJavaServer.java"
    cat >"$MJS_BIN" <<EOF
#!/bin/sh
# mongo-java-server on 127.0.0.1:PORT (memory backend); made by setup.sh.
exec java -XX:+UseSerialGC -cp "$MJS/classes:$MJS/lib/*" \\
    SyncdMongoJavaServer "\$@"
EOF
    chmod +x "$MJS_BIN"
    echo "$mjs_stamp" >"$MJS/stamp"
fi

# linzcheck: the Porcupine checker of tests/linz (its own Go module, with
# Porcupine from the Go module proxy), rebuilt when its sources change.
LINZCHECK="$ROOT/.tools/bin/linzcheck"
LINZSRC="$ROOT/tests/linz/checker"
if [ ! -x "$LINZCHECK" ] ||
    [ -n "$(find "$LINZSRC" -newer "$LINZCHECK" -type f -print -quit)" ]; then
    ensure_go
    echo "setup: building linzcheck into $LINZCHECK with $GO" >&2
    mkdir -p "$ROOT/.tools/bin"
    (cd "$LINZSRC" && GOTOOLCHAIN=auto GOFLAGS=-mod=mod "$GO" build -o "$LINZCHECK" .)
fi

# Toxiproxy, the network fault injector of tests/test_netfault.sh: from the
# Go module proxy with the recipe in tests/tools/toxiproxy (a module of its
# own, so that its dependencies do not move FerretDB's).
TOXIPROXY="$ROOT/.tools/bin/toxiproxy-server"
if [ ! -x "$TOXIPROXY" ]; then
    ensure_go
    echo "setup: building Toxiproxy into $TOXIPROXY with $GO" >&2
    (
        cd "$ROOT/tests/tools/toxiproxy"
        mkdir -p "$ROOT/.tools/bin"
        GOTOOLCHAIN=auto GOFLAGS=-mod=mod "$GO" build -o "$TOXIPROXY" \
            github.com/Shopify/toxiproxy/v2/cmd/server
    )
fi
