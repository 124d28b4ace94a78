# mongo.Dockerfile - stand-in for the mongo:7 image where no registry can
# be reached: FerretDB (built by scripts/setup.sh into .tools/bin; the
# build context is that folder) with its SQLite backend, listening on
# 27017 on all interfaces like mongod in its image, its data in the same
# /data/db volume. No replication, transactions or change streams, which
# syncd does not need (docker-compose.yml says why).
FROM debian:bookworm-slim
COPY ferretdb /usr/local/bin/ferretdb
RUN useradd --system --uid 999 --user-group mongodb && \
    mkdir -p /data/db /data/state && chown -R mongodb:mongodb /data
USER mongodb
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["ferretdb", "--handler=sqlite", "--sqlite-url=file:/data/db/", \
    "--listen-addr=0.0.0.0:27017", "--state-dir=/data/state", \
    "--telemetry=disable", "--log-level=warn", "--debug-addr=-"]
