# redis.Dockerfile - stand-in for the redis:7 image where no registry can
# be reached: Debian's redis-server (7.0) and redis-cli, run as the redis
# user with /data as its working dir and volume, like the real image.
# docker-compose.yml gives the command (redis-server and its flags).
FROM debian:bookworm-slim
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends redis-server redis-tools && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* && \
    mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
