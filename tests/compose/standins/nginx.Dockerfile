# nginx.Dockerfile - stand-in for the nginx:1.27 image where no registry
# can be reached: Debian's nginx (1.22). Like the real image it includes
# /etc/nginx/conf.d/*.conf inside its http block, where docker-compose.yml
# mounts deploy/nginx.conf; Debian's own default site is removed so that
# the mounted server is the only one. Logs go to the container's output.
FROM debian:bookworm-slim
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends nginx && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /etc/nginx/sites-enabled/default && \
    ln -sf /dev/stdout /var/log/nginx/access.log && \
    ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
