#!/bin/sh
# The official image creates the default user from these variables; do the same, and drop
# root before the broker starts.
set -eu
conf=/etc/rabbitmq/conf.d/20-default-user.conf
mkdir -p /etc/rabbitmq/conf.d
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
    {
        echo "default_user = $RABBITMQ_DEFAULT_USER"
        echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-$RABBITMQ_DEFAULT_USER}"
    } >"$conf"
else
    # guest is loopback-only by default; the broker is reached over the compose network.
    echo "loopback_users.guest = false" >"$conf"
fi
chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq
if [ "$1" = rabbitmq-server ]; then
    shift
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
