#!/usr/bin/env bash
# base-image.sh - make sure the Docker engine has a Debian 12 base image
# under the names debian:bookworm and debian:bookworm-slim. Where a registry
# can be reached nothing is needed (docker pulls them); on a machine that
# reaches only the Debian archive, this builds one with debootstrap
# (minbase variant, the same archive and suites as the official images) and
# imports it under both names. Does nothing when both names already exist,
# so it is cheap to call before every build. Run as root.
set -euo pipefail

NAMES=(debian:bookworm-slim debian:bookworm)
MIRROR="${SYNCD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

missing=0
for n in "${NAMES[@]}"; do
    docker image inspect "$n" >/dev/null 2>&1 || missing=1
done
[ "$missing" -eq 1 ] || exit 0

if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends debootstrap >&2
fi

DIR="$(mktemp -d /var/tmp/syncd-rootfs.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT
echo "base-image: debootstrap bookworm into $DIR" >&2
debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" >&2

# The sources of the official image: the release, its updates and security.
rm -f "$DIR/etc/apt/sources.list"
cat >"$DIR/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/*

tar -C "$DIR" -c . | docker import --change 'CMD ["bash"]' - "${NAMES[0]}" >&2
for n in "${NAMES[@]:1}"; do
    docker tag "${NAMES[0]}" "$n"
done
echo "base-image: imported ${NAMES[*]}" >&2
