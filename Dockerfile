# Dockerfile - the syncd image: syncd and syncctl on Debian 12.
#
# Two stages on debian:bookworm-slim. The build stage installs the
# project's build dependencies and runs its own CMake build (only the
# syncd and syncctl targets, Release). The runtime stage holds only the
# shared libraries they link, the two binaries and a non-root user; the
# node's cache (RocksDB) lives in the /data volume. The listen address
# defaults to 0.0.0.0:7070 here through SYNCD_LISTEN (the binary's own
# default stays 127.0.0.1:7070); every other setting is a SYNCD_* variable
# or a flag (syncd --help). docker-compose.yml runs three of these.
#
#   docker build -t syncd:local .
#   docker run --rm -p 127.0.0.1:7070:7070 syncd:local   # embedded default

FROM debian:bookworm-slim AS build
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends build-essential cmake pkg-config \
        libjansson-dev libuv1-dev libcmocka-dev libmongoc-dev libbson-dev \
        libhiredis-dev librocksdb-dev libhttp-parser-dev \
        libcurl4-openssl-dev libssl-dev libarchive-dev zlib1g-dev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release >/dev/null && \
    cmake --build /build -j"$(nproc)" --target syncd syncctl && \
    install -s -m 0755 /build/syncd/syncd /build/syncd/syncctl /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends libjansson4 libuv1 libmongoc-1.0-0 \
        libbson-1.0-0 libhiredis0.14 librocksdb7.8 libhttp-parser2.9 \
        libcurl4 libssl3 libarchive13 && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* && \
    useradd --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin syncd && \
    mkdir /data && chown syncd:syncd /data
COPY --from=build /usr/local/bin/syncd /usr/local/bin/syncctl /usr/local/bin/
# Fails the build when a linked library is missing from the list above.
RUN ! ldd /usr/local/bin/syncd /usr/local/bin/syncctl | grep 'not found'
USER syncd
WORKDIR /data
VOLUME /data
ENV SYNCD_LISTEN=0.0.0.0:7070 SYNCD_DATA_DIR=/data
EXPOSE 7070
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["syncctl", "health"]
ENTRYPOINT ["syncd"]
