# nginx 1.22 from Debian's packages, for machines without a registry (see
# scripts/build-offline-images.sh). libnginx-mod-stream drops its load_module line into
# /etc/nginx/modules-enabled/, which config/nginx/nginx.conf includes; the official nginx image
# has the stream module built in and no such file, so one config serves both.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light libnginx-mod-stream curl \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
