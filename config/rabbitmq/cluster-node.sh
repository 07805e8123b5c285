#!/bin/bash
# Entry point of one RabbitMQ cluster node in the swarm stack (deploy/swarm/stack.yml),
# mounted as a Docker config. It runs as root before the image's own entry point and:
#   1. installs the Erlang cookie from its Docker secret as $HOME/.erlang.cookie (owner
#      rabbitmq, mode 0400: the Erlang VM refuses a cookie that others can read), so the
#      cookie never appears in the environment or in `docker inspect`;
#   2. makes the default user's password come from its Docker secret, not the environment;
#   3. copies the cluster configuration (config/rabbitmq/cluster.conf) into conf.d;
#   4. on the very first boot of a node other than the seed, waits until the seed node
#      accepts connections. Nodes that boot in parallel with empty data directories could
#      otherwise each form a cluster of their own; once a node has joined, it finds its
#      peers from its own data on every later start, in any order.
# Then it hands over to the image's entry point: the official image's docker-entrypoint.sh,
# or the one of scripts/build-offline-images.sh.
set -euo pipefail

DATA=/var/lib/rabbitmq
COOKIE_FILE=${RABBITMQ_ERLANG_COOKIE_FILE:-/run/secrets/rabbitmq_erlang_cookie}
PASSWORD_FILE=${RABBITMQ_DEFAULT_PASS_FILE:-/run/secrets/rabbitmq_password}
CLUSTER_CONF=${SLUICE_RABBITMQ_CLUSTER_CONF:-/run/sluice/cluster.conf}
SEED=${SLUICE_RABBITMQ_SEED:-rabbitmq1}
SEED_WAIT=${SLUICE_RABBITMQ_SEED_WAIT:-300}

say() { printf 'cluster-node: %s\n' "$*" >&2; }

[[ -r $COOKIE_FILE ]] || { say "the Erlang cookie secret $COOKIE_FILE is missing"; exit 1; }
mkdir -p "$DATA" /etc/rabbitmq/conf.d
install -m 0400 "$COOKIE_FILE" "$DATA/.erlang.cookie"
chown rabbitmq:rabbitmq "$DATA" "$DATA/.erlang.cookie"

if [[ -r $PASSWORD_FILE ]]; then
    # conf.d files are read in name order, later ones win: this one comes after the image's.
    umask 077
    {
        echo "default_user = ${SLUICE_RABBITMQ_USER:-sluice}"
        echo "default_pass = $(head -n 1 "$PASSWORD_FILE")"
    } >/etc/rabbitmq/conf.d/90-sluice-default-user.conf
    chown rabbitmq:rabbitmq /etc/rabbitmq/conf.d/90-sluice-default-user.conf
    umask 022
fi
if [[ -r $CLUSTER_CONF ]]; then
    install -m 0644 "$CLUSTER_CONF" /etc/rabbitmq/conf.d/91-sluice-cluster.conf
fi

node=${RABBITMQ_NODENAME:?RABBITMQ_NODENAME must name this node, e.g. rabbit@rabbitmq2}
# The node's database directory is empty (or absent) until it first joined or formed a cluster.
if [[ ${node#*@} != "$SEED" && -z $(ls -A "$DATA/mnesia/$node" 2>/dev/null) ]]; then
    say "first boot: waiting up to ${SEED_WAIT}s for the seed node $SEED before joining"
    deadline=$((SECONDS + SEED_WAIT))
    until (exec 3<>"/dev/tcp/$SEED/5672") 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "the seed node $SEED did not come up; exiting so the orchestrator retries"
            exit 1
        fi
        sleep 2
    done
fi

if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh "$@"
fi
exec /usr/local/bin/rabbitmq-entrypoint "$@"
