# RabbitMQ from Debian's package, for machines without a registry (see
# scripts/build-offline-images.sh). Behaves like the official rabbitmq:*-management image in
# what docker-compose.yml relies on: ports 5672/15672, data in /var/lib/rabbitmq,
# RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS, and the health check
# `rabbitmq-diagnostics -q check_port_connectivity` (listeners accept connections).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* /var/log/rabbitmq/* \
    && rabbitmq-plugins enable --offline rabbitmq_management \
    && printf '%s\n' \
        'listeners.tcp.default = 5672' \
        'management.tcp.port = 15672' \
        'log.console = true' \
        'log.file = false' \
        >/etc/rabbitmq/rabbitmq.conf \
    && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
EXPOSE 5672 15672
VOLUME /var/lib/rabbitmq
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint"]
CMD ["rabbitmq-server"]
