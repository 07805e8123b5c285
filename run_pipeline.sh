#!/usr/bin/env bash
# Build, start, scale and inspect the sluice pipeline with Docker Compose.
#
#   ./run_pipeline.sh                       build, start everything, wait until healthy
#   ./run_pipeline.sh up [--scale svc=N]... same, with replica counts (e.g. --scale server=3)
#   ./run_pipeline.sh up --tls              TLS and authentication on every hop (docs/security.md);
#                                           stays on for later commands until `up --no-tls`
#   ./run_pipeline.sh scale svc=N...        change replica counts of running services
#   ./run_pipeline.sh status                containers, health, endpoints
#   ./run_pipeline.sh logs [svc...]         logs (extra flags go to compose, e.g. -f)
#   ./run_pipeline.sh demo                  pause the load generators, stream a fixed number of
#                                           records, wait until they are indexed, print aggregates
#   ./run_pipeline.sh down [--volumes]      stop and remove (--volumes: and the data)
#
# The same on Docker Swarm, for several hosts (deploy/swarm/stack.yml, docs/scaling.md):
#   ./run_pipeline.sh stack up [--scale svc=N]...  create secrets, deploy, wait until healthy,
#                                                  replicate the quorum queues on every node
#   ./run_pipeline.sh stack scale svc=N...         change replica counts
#   ./run_pipeline.sh stack status                 services, tasks, RabbitMQ nodes and queues
#   ./run_pipeline.sh stack down [--volumes]       remove the stack (--volumes: and its data,
#                                                  secrets and configs)
#
# Environment:
#   SLUICE_SKIP_BUILD=1      use the images as they are; never build (nor pull the base image)
#   SLUICE_OFFLINE=0         ignore .offline-images.env (written by scripts/build-offline-images.sh)
#                            and always pull from the registry. Otherwise, when no registry can be
#                            reached, the images are built locally first (scripts/images.sh)
#   SLUICE_COMPOSE           compose command, e.g. "docker-compose" (default: docker compose, then docker-compose)
#   COMPOSE_PROJECT_NAME     default "sluice"
#   SLUICE_INGEST_PORT, SLUICE_HTTP_PORT, SLUICE_RABBITMQ_UI_PORT, SLUICE_ES_PORT  host ports
#   SLUICE_WAIT_TIMEOUT      seconds to wait for health (default 300)
#   SLUICE_DEMO_COUNT        records the demo sends (default 20000)
#   SLUICE_DEMO_TIMEOUT      seconds the demo waits for its records to be indexed (default 120)
#   SLUICE_BIND_ADDRESS      host address of the published ingest and API ports (default 127.0.0.1;
#                            0.0.0.0 opens them to other machines: turn on --tls first)
#   SLUICE_ENV_FILE          the generated passwords and settings (default .env, git-ignored)
#   SLUICE_SECRETS_DIR       generated certificates, keys, tokens (default .secrets, git-ignored)
#   SLUICE_STACK             swarm stack name (default sluice); SLUICE_IMAGE must then be a
#                            registry reference every host can pull (one-host swarm: any tag)
#   SLUICE_STACK_FILES       more stack files, colon-separated (deploy/swarm/elasticsearch-cluster.yml)
#
# The first `up` writes random passwords to .env (see .env.example); nothing prints them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-sluice}
INGEST_PORT=${SLUICE_INGEST_PORT:-7000}
HTTP_PORT=${SLUICE_HTTP_PORT:-8000}
RABBITMQ_UI_PORT=${SLUICE_RABBITMQ_UI_PORT:-15672}
ES_PORT=${SLUICE_ES_PORT:-9200}
WAIT_TIMEOUT=${SLUICE_WAIT_TIMEOUT:-300}
ENV_FILE=${SLUICE_ENV_FILE:-$PWD/.env}
export SLUICE_SECRETS_DIR=${SLUICE_SECRETS_DIR:-$PWD/.secrets}

say() { printf '%s\n' "$*"; }
die() { printf 'run_pipeline: %s\n' "$*" >&2; exit 1; }

usage() {
    awk 'NR == 1 { next } /^set -euo/ { exit } { sub(/^# ?/, ""); print }' "$0"
}

# Images built without a registry: use them unless told otherwise. Variables already set in
# the environment win over the file.
load_offline_env() {
    local file=.offline-images.env key value
    [[ ${SLUICE_OFFLINE:-} != 0 && -f $file ]] || return 0
    while IFS='=' read -r key value; do
        [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        [[ -n ${!key+x} ]] || export "$key=$value"
    done <"$file"
    say "Using the locally built images from $file (SLUICE_OFFLINE=0 ignores it)." >&2
}

check_docker() {
    command -v docker >/dev/null 2>&1 || die "Docker is not installed. Install Docker Engine \
(https://docs.docker.com/engine/install/; on Debian/Ubuntu: apt-get install docker.io docker-compose)."
    local err
    if ! err=$(docker info 2>&1 >/dev/null); then
        if [[ $err == *"permission denied"* ]]; then
            die "no permission to talk to the Docker daemon: add yourself to the 'docker' group or use sudo."
        fi
        die "the Docker daemon is not running. Start it (systemctl start docker, or: dockerd >/var/log/dockerd.log 2>&1 &) and try again."
    fi
}

COMPOSE=()
find_compose() {
    if [[ -n ${SLUICE_COMPOSE:-} ]]; then
        read -r -a COMPOSE <<<"$SLUICE_COMPOSE"
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "neither 'docker compose' (v2 plugin) nor 'docker-compose' is installed."
    fi
}

compose() {
    local files=(-f docker-compose.yml) env=()
    if tls_on; then files+=(-f docker-compose.tls.yml); fi
    [[ -f $ENV_FILE ]] && env=(--env-file "$ENV_FILE")
    "${COMPOSE[@]}" ${env[@]+"${env[@]}"} "${files[@]}" "$@"
}

# -- secrets: passwords in .env, certificates and tokens in .secrets (docs/security.md) --------

env_value() { [[ -f $ENV_FILE ]] || return 0; sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; }
tls_on() { [[ $(env_value SLUICE_TLS) == 1 ]]; }

# Hex: safe unescaped in URLs, YAML and config files.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

set_env() {  # set_env KEY VALUE: replace or append, keeping the file private
    local tmp
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    { grep -v "^$1=" "$ENV_FILE" || true; printf '%s=%s\n' "$1" "$2"; } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$ENV_FILE"
}

ensure_env() {
    local key created=()
    if [[ ! -f $ENV_FILE ]]; then
        (umask 077; printf '# Generated by run_pipeline.sh: keep private (see .env.example)\n' >"$ENV_FILE")
    fi
    for key in RABBITMQ_ADMIN_PASSWORD SLUICE_SERVER_AMQP_PASSWORD SLUICE_PARSER_AMQP_PASSWORD \
               SLUICE_API_AMQP_PASSWORD ELASTIC_PASSWORD; do
        if [[ -z $(env_value "$key") ]]; then
            set_env "$key" "$(random_hex 24)"
            created+=("$key")
        fi
    done
    if ((${#created[@]})); then
        say "Generated random passwords into $ENV_FILE (private, git-ignored, never printed): ${created[*]}"
    fi
    render_rabbitmq_definitions
}

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)).
rabbit_hash() {
    local salt
    salt=$(random_hex 4 | sed 's/../\\x&/g')
    # shellcheck disable=SC2059  # the format is the salt's \x escapes, nothing else
    { printf "$salt"; { printf "$salt"; printf '%s' "$1"; } | openssl dgst -sha256 -binary; } | openssl base64 -A
}

render_rabbitmq_definitions() {
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to hash RabbitMQ passwords (apt-get install openssl)"
    local dir=$SLUICE_SECRETS_DIR/rabbitmq tmp
    mkdir -p "$dir"
    chmod 700 "$SLUICE_SECRETS_DIR"
    tmp=$(mktemp "$dir/definitions.XXXXXX")
    sed -e "s|@ADMIN_HASH@|$(rabbit_hash "$(env_value RABBITMQ_ADMIN_PASSWORD)")|" \
        -e "s|@SERVER_HASH@|$(rabbit_hash "$(env_value SLUICE_SERVER_AMQP_PASSWORD)")|" \
        -e "s|@PARSER_HASH@|$(rabbit_hash "$(env_value SLUICE_PARSER_AMQP_PASSWORD)")|" \
        -e "s|@API_HASH@|$(rabbit_hash "$(env_value SLUICE_API_AMQP_PASSWORD)")|" \
        config/rabbitmq/definitions.template.json >"$tmp"
    # Readable by the broker's own user in its container; the 0700 directory keeps others out.
    chmod 644 "$tmp"
    mv "$tmp" "$dir/definitions.json"
}

new_token() { head -c 32 /dev/urandom | openssl base64 -A | tr '+/' '-_' | tr -d '='; }
token_hash() { printf '%s' "$1" | openssl dgst -sha256 -r | sed 's/ .*//; s/^/sha256:/'; }

# add_token NAME SCOPES PLAIN_FILE HASHED_FILE: a new token, unless NAME already has one
add_token() {
    local name=$1 scopes=$2 plain=$3 hashed=$4 token
    if [[ -s $plain ]] && grep -q "^$name " "$hashed" 2>/dev/null; then
        return 0
    fi
    token=$(new_token)
    (umask 077; printf '%s\n' "$token" >"$plain")
    { grep -v "^$name " "$hashed" 2>/dev/null || true
      printf '%s %s %s\n' "$name" "$(token_hash "$token")" "$scopes"; } >"$hashed.new"
    mv "$hashed.new" "$hashed"
}

ensure_tls_material() {
    command -v openssl >/dev/null 2>&1 || die "--tls needs openssl (apt-get install openssl)"
    local dir=$SLUICE_SECRETS_DIR
    say "TLS on: using the local CA, certificates and tokens in $dir (made once, kept across runs)."
    scripts/make-certs.sh "$dir/tls" rabbitmq elasticsearch server,nginx api nginx client
    mkdir -p "$dir/tokens" "$dir/client"
    add_token load-generator ingest:measurement "$dir/client/client.token" "$dir/tokens/ingest"
    add_token operator ingest:measurement "$dir/operator.token" "$dir/tokens/ingest"
    add_token reader read "$dir/api-reader.token" "$dir/tokens/api"
    (umask 077; printf 'Authorization: Bearer %s\n' "$(cat "$dir/api-reader.token")" >"$dir/api-reader.header")
    # The containers' users (rabbitmq, elasticsearch, sluice) read these through their bind
    # mounts; on the host, the 0700 directory keeps everyone but its owner out.
    chmod 700 "$dir"
    chmod 755 "$dir/tls" "$dir/tokens" "$dir/client"
    chmod 644 "$dir"/tls/*.pem "$dir"/tls/*.key "$dir"/tokens/* "$dir"/client/*
}

# ensure_images: pull, or build locally when no registry is reachable.
# shellcheck source=scripts/images.sh
source scripts/images.sh

skip_build() { [[ ${SLUICE_SKIP_BUILD:-0} == 1 ]]; }

build() {
    if skip_build; then
        say "SLUICE_SKIP_BUILD=1: using image ${SLUICE_IMAGE:-sluice:latest} as it is."
        docker image inspect "${SLUICE_IMAGE:-sluice:latest}" >/dev/null 2>&1 \
            || die "image ${SLUICE_IMAGE:-sluice:latest} does not exist; build it (unset SLUICE_SKIP_BUILD)."
        return
    fi
    say "Building the sluice image ..."
    # Only `server` has a build section; the other sluice services share its image.
    compose build server
}

# Containers of this project, without one-off `run` containers.
project_containers() {
    docker ps -a -q \
        --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.oneoff=False"
}

# One line per container: service name status health exit-code restart-policy
container_states() {
    local ids
    ids=$(project_containers)
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}' $ids \
        | sed 's# /# #' | sort
}

show_not_ready() {
    local service name rest
    say "Not ready:" >&2
    # shellcheck disable=SC2001  # indents every line
    sed 's/^/  /' <<<"$1" >&2
    while read -r service name rest; do
        say "--- last log lines of $name ($service) ---" >&2
        docker logs --tail 20 "$name" 2>&1 | sed 's/^/  /' >&2
    done <<<"$1"
}

# Ready: running and healthy (or without a health check), or a finished client run (exit 0).
wait_healthy() {
    local deadline=$((SECONDS + WAIT_TIMEOUT)) states pending failed
    say "Waiting for every service to be healthy (up to ${WAIT_TIMEOUT}s) ..."
    while :; do
        states=$(container_states)
        pending=$(awk '!(($3 == "running" && ($4 == "healthy" || $4 == "none")) ||
                         ($1 == "client" && $3 == "exited" && $5 == 0))' <<<"$states")
        if [[ -n $states && -z $pending ]]; then
            say "All services are healthy."
            return 0
        fi
        # Exited with an error and will not be restarted: waiting cannot help.
        failed=$(awk '$3 == "exited" && $5 != 0 && ($6 == "no" || $6 == "")' <<<"$pending")
        if [[ -n $failed ]]; then
            show_not_ready "$failed"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "Timed out after ${WAIT_TIMEOUT}s." >&2
            show_not_ready "$pending"
            return 1
        fi
        sleep 2
    done
}

endpoints() {
    if tls_on; then
        endpoints_tls
        return
    fi
    cat <<EOF

sluice is running (project $COMPOSE_PROJECT_NAME).
  Ingest (TCP, msgpack frames):  localhost:$INGEST_PORT
      sluice client --target localhost:$INGEST_PORT --count 1000    (or: ./run_pipeline.sh demo)
  API:                           http://localhost:$HTTP_PORT/api/v1/
      curl -s http://localhost:$HTTP_PORT/api/v1/stats
      curl -s 'http://localhost:$HTTP_PORT/api/v1/sensors?size=5'
  Dashboard:                     http://localhost:$HTTP_PORT/
  RabbitMQ management UI:        http://localhost:$RABBITMQ_UI_PORT/  (user admin, password RABBITMQ_ADMIN_PASSWORD in $ENV_FILE)
  Elasticsearch:                 http://localhost:$ES_PORT/
More replicas:  ./run_pipeline.sh scale server=3 parser=2
Stop:           ./run_pipeline.sh down   (add --volumes to delete the data)
Published ports listen on ${SLUICE_BIND_ADDRESS:-127.0.0.1} only; SLUICE_BIND_ADDRESS=0.0.0.0 opens them
(turn on TLS and authentication first: ./run_pipeline.sh up --tls, docs/security.md).
EOF
}

endpoints_tls() {
    local s=$SLUICE_SECRETS_DIR
    cat <<EOF

sluice is running with TLS and authentication on every hop (project $COMPOSE_PROJECT_NAME).
  Ingest (TLS + token):  localhost:$INGEST_PORT
      SLUICE_TOKEN_FILE=$s/operator.token sluice client --target localhost:$INGEST_PORT --ca-file $s/tls/ca.pem --count 1000
  API (HTTPS + bearer token; plain HTTP is redirected):  https://localhost:$HTTP_PORT/api/v1/
      curl -s --cacert $s/tls/ca.pem -H "Authorization: Bearer \$(cat $s/api-reader.token)" https://localhost:$HTTP_PORT/api/v1/stats
  Dashboard:  https://localhost:$HTTP_PORT/  (trust $s/tls/ca.pem; the page asks for the token in $s/api-reader.token)
  RabbitMQ:   AMQPS only, inside the network; management UI http://localhost:$RABBITMQ_UI_PORT/ (user admin, password in $ENV_FILE)
Rotating certificates and tokens: docs/security.md
Published ports listen on ${SLUICE_BIND_ADDRESS:-127.0.0.1} only; SLUICE_BIND_ADDRESS=0.0.0.0 opens them.
Stop:       ./run_pipeline.sh down   (add --volumes to delete the data)
EOF
}

# Arrays are expanded as ${a[@]+"${a[@]}"}: bash < 4.4 (macOS's /bin/bash is 3.2) treats
# "${a[@]}" of an empty array as unbound under `set -u`.

# shellcheck disable=SC2120  # demo calls it without arguments
cmd_up() {
    local args=() service tls=
    while (($#)); do
        case $1 in
            --scale) (($# >= 2)) || die "--scale needs svc=N"; args+=(--scale "$2"); shift 2 ;;
            --scale=*) args+=(--scale "${1#--scale=}"); shift ;;
            --tls) tls=1; shift ;;
            --no-tls) tls=0; shift ;;
            *) die "up: unknown argument '$1' (expected --scale svc=N, --tls or --no-tls)" ;;
        esac
    done
    ensure_env
    [[ -n $tls ]] && set_env SLUICE_TLS "$tls"
    if tls_on; then ensure_tls_material; fi
    for service in ${args[@]+"${args[@]}"}; do
        [[ $service == --scale || $service =~ ^[a-z]+=[0-9]+$ ]] || die "bad scale '$service' (expected svc=N)"
    done
    skip_build || ensure_images
    build
    say "Starting the pipeline ..."
    compose up -d --no-build --remove-orphans ${args[@]+"${args[@]}"}
    wait_healthy
    endpoints
}

cmd_scale() {
    (($#)) || die "scale: expected svc=N ..."
    local args=() services=() spec
    for spec in "$@"; do
        [[ $spec =~ ^([a-z]+)=([0-9]+)$ ]] || die "bad scale '$spec' (expected svc=N)"
        args+=(--scale "$spec")
        services+=("${BASH_REMATCH[1]}")
    done
    # Only the named services change: without --no-deps and the service names, compose would
    # also reset every other service to one replica. nginx needs no restart: it re-resolves
    # the service name every few seconds.
    compose up -d --no-build --no-deps --no-recreate ${args[@]+"${args[@]}"} ${services[@]+"${services[@]}"}
    wait_healthy
}

cmd_status() {
    if [[ -z $(project_containers) ]]; then
        say "Nothing of project $COMPOSE_PROJECT_NAME exists; start it with ./run_pipeline.sh"
        return 0
    fi
    compose ps
    say ""
    { say "SERVICE CONTAINER STATE HEALTH EXIT RESTART"; container_states; } | column -t 2>/dev/null \
        || container_states
    endpoints
}

cmd_logs() {
    compose logs --no-color "$@"
}

api_get() {
    if tls_on; then
        # The token goes in a header file, not the command line (visible in ps).
        curl -fsS --max-time 10 --cacert "$SLUICE_SECRETS_DIR/tls/ca.pem" \
            -H "@$SLUICE_SECRETS_DIR/api-reader.header" "https://localhost:$HTTP_PORT$1"
    else
        curl -fsS --max-time 10 "http://localhost:$HTTP_PORT$1"
    fi
}

# The first integer value of KEY in the JSON on stdin (flat objects, as the API and the client print).
json_int() { sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" | head -n 1; }

# Documents the API counts (GET /api/v1/stats without filters); empty when it does not answer.
doc_count() { api_get /api/v1/stats 2>/dev/null | json_int count; }

# The load generators (service `client`) the demo stopped, to start again when it ends.
PAUSED=()
resume_load_generators() {
    ((${#PAUSED[@]})) || return 0
    say "Resuming the ${#PAUSED[@]} load generator(s) paused for the demo."
    docker start ${PAUSED[@]+"${PAUSED[@]}"} >/dev/null || say "could not restart them: ./run_pipeline.sh up" >&2
    PAUSED=()
}

# The demo shows its own records arriving: the compose load generators (which stream forever
# by default) are stopped first, so the document count moves only with the demo's records.
cmd_demo() {
    local count=${SLUICE_DEMO_COUNT:-20000} timeout=${SLUICE_DEMO_TIMEOUT:-120}
    local before now previous summary acked expected deadline client_status=0 status=0 id
    [[ $count =~ ^[1-9][0-9]*$ ]] || die "SLUICE_DEMO_COUNT must be a positive number, not '$count'"
    [[ $timeout =~ ^[0-9]+$ ]] || die "SLUICE_DEMO_TIMEOUT must be a number of seconds, not '$timeout'"
    command -v curl >/dev/null 2>&1 || die "demo needs curl"
    if ! api_get /healthz >/dev/null 2>&1; then
        say "The pipeline is not up; starting it first."
        cmd_up
    fi

    while read -r id; do
        [[ -n $id ]] && PAUSED+=("$id")
    done < <(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.service=client" --filter "label=com.docker.compose.oneoff=False")
    if ((${#PAUSED[@]})); then
        say "Pausing the ${#PAUSED[@]} load generator(s) (service client) for the demo, so that the"
        say "document count moves only with the demo's records; they resume when it ends."
        trap resume_load_generators EXIT
        # SIGTERM: each one waits for the acks it is owed, then exits (stop_grace_period).
        compose stop client >/dev/null 2>&1 || die "could not stop the load generators"
    fi

    # What the stopped generators had acked is still on its way into the index: wait until
    # the count stops moving.
    say "Counting the documents already indexed ..."
    deadline=$((SECONDS + 60))
    before=$(doc_count)
    while :; do
        sleep 3
        previous=$before
        before=$(doc_count)
        [[ -n $before && $before == "$previous" ]] && break
        ((SECONDS < deadline)) || break
    done
    [[ -n $before ]] || die "the API does not answer at http://localhost:$HTTP_PORT/api/v1/stats"
    say "Documents before the demo: $before"

    say "Streaming $count records through nginx (one-off client container, --count=$count --json) ..."
    # -T: no TTY, so the JSON summary on stdout stays apart from log lines on stderr, which
    # are kept to warnings and errors.
    summary=$(compose run --rm --no-deps -T -e SLUICE_LOG_LEVEL=warning client client --target=nginx:7000 --json \
        --connections=4 --rate=0 --count="$count") || client_status=$?
    say "Client summary: ${summary:-(none)}"
    acked=$(json_int acked <<<"$summary")
    [[ -n $acked ]] || die "the demo client printed no summary (exit status $client_status)"
    ((client_status == 0)) || say "The client could not deliver every record: $acked of $count acked." >&2

    # Acked means safely in RabbitMQ; the parsers index it moments later.
    expected=$((before + acked))
    say "Waiting until the API counts $expected documents ($before + $acked acked), up to ${timeout}s ..."
    deadline=$((SECONDS + timeout))
    now=$(doc_count)
    while [[ -z $now || $now -lt $expected ]] && ((SECONDS < deadline)); do
        sleep 1
        now=$(doc_count)
    done
    now=${now:-0}
    if ((now == expected)); then
        say "All $acked acked records of the demo are indexed: $before -> $now documents."
    elif ((now > expected)); then
        say "All $acked acked records are indexed, and $((now - expected)) more documents arrived from elsewhere: $before -> $now."
    else
        say "After ${timeout}s only $((now - before)) of the $acked acked records are indexed ($before -> $now); see ./run_pipeline.sh logs parser" >&2
        status=1
    fi

    say ""
    say "curl -s http://localhost:$HTTP_PORT/api/v1/stats"
    api_get /api/v1/stats | { python3 -m json.tool 2>/dev/null || cat; }
    say ""
    say "curl -s 'http://localhost:$HTTP_PORT/api/v1/sensors?size=5'"
    api_get '/api/v1/sensors?size=5' | { python3 -m json.tool 2>/dev/null || cat; }
    say ""
    resume_load_generators
    ((status == 0 && client_status == 0))
}

cmd_down() {
    local args=(--remove-orphans)
    while (($#)); do
        case $1 in
            --volumes|-v) args+=(--volumes); shift ;;
            *) die "down: unknown argument '$1' (expected --volumes)" ;;
        esac
    done
    compose down ${args[@]+"${args[@]}"}
}

# -- Docker Swarm ------------------------------------------------------------------------
# Kept apart from the compose commands above: they share only check_docker,
# load_offline_env, say, die and WAIT_TIMEOUT.

STACK_FILE=deploy/swarm/stack.yml
STACK_SECRETS=(amqp_url rabbitmq_password rabbitmq_erlang_cookie)
# Hosts that run a stateful service or the ingress nginx carry a label (deploy/swarm/stack.yml).
STACK_LABELS=(sluice.rabbitmq1 sluice.rabbitmq2 sluice.rabbitmq3 sluice.elasticsearch sluice.ingress)
RABBITMQ_NODES=(rabbitmq1 rabbitmq2 rabbitmq3)
STACK_ARGS=()
SCALE_ARGS=()

stack_name() { printf '%s' "${SLUICE_STACK:-sluice}"; }

stack_check_swarm() {
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) || state=unknown
    [[ $state == active ]] || die "this Docker engine is not part of a swarm (state: $state). \
Create one with: docker swarm init --advertise-addr <this host's address> (or join one), then retry."
    [[ $(docker info --format '{{.Swarm.ControlAvailable}}') == true ]] \
        || die "this node is a swarm worker; run stack commands on a manager node."
    [[ $(stack_name) =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]] || die "bad SLUICE_STACK '$(stack_name)'"
}

stack_files() {
    local extra=() file
    STACK_ARGS=(-c "$STACK_FILE")
    IFS=: read -r -a extra <<<"${SLUICE_STACK_FILES:-}"
    for file in ${extra[@]+"${extra[@]}"}; do
        [[ -f $file ]] || die "stack file '$file' (SLUICE_STACK_FILES) does not exist"
        STACK_ARGS+=(-c "$file")
    done
}

random_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# Secrets are created once and kept across `stack up`s: the RabbitMQ data on the volumes was
# written with them. Create them by hand (docker secret create) to choose the values.
stack_secrets() {
    local stack password name
    stack=$(stack_name)
    if ! docker secret inspect "${stack}_rabbitmq_password" >/dev/null 2>&1; then
        password=$(random_secret)
        printf '%s' "$password" | docker secret create "${stack}_rabbitmq_password" - >/dev/null
        # Every node's URL: the services fail over between them.
        printf 'amqp://sluice:%s@rabbitmq1:5672/,amqp://sluice:%s@rabbitmq2:5672/,amqp://sluice:%s@rabbitmq3:5672/' \
            "$password" "$password" "$password" | docker secret create "${stack}_amqp_url" - >/dev/null
        say "Created the secrets ${stack}_rabbitmq_password and ${stack}_amqp_url (random password)."
    fi
    if ! docker secret inspect "${stack}_rabbitmq_erlang_cookie" >/dev/null 2>&1; then
        random_secret | docker secret create "${stack}_rabbitmq_erlang_cookie" - >/dev/null
        say "Created the secret ${stack}_rabbitmq_erlang_cookie."
    fi
    for name in "${STACK_SECRETS[@]}"; do
        docker secret inspect "${stack}_$name" >/dev/null 2>&1 \
            || die "secret ${stack}_$name is missing; create it: docker secret create ${stack}_$name FILE"
    done
}

# A one-host swarm gets every label; on several hosts the operator decides where state lives.
stack_labels() {
    local nodes label missing=()
    nodes=$(docker node ls -q)
    for label in "${STACK_LABELS[@]}"; do
        # shellcheck disable=SC2086  # one argument per node
        docker node inspect -f "{{index .Spec.Labels \"$label\"}}" $nodes | grep -qx true \
            || missing+=("$label")
    done
    ((${#missing[@]})) || return 0
    if [[ $(wc -l <<<"$nodes") == 1 ]]; then
        say "One-host swarm: labelling this node ${missing[*]}."
        for label in "${missing[@]}"; do
            docker node update --label-add "$label=true" "$nodes" >/dev/null
        done
        return 0
    fi
    die "no swarm node carries the label(s) ${missing[*]}. Pin each stateful service to a host:
$(for label in "${missing[@]}"; do printf '  docker node update --label-add %s=true HOST\n' "$label"; done)"
}

stack_image() {
    local image=${SLUICE_IMAGE:-}
    [[ -n $image ]] || die "SLUICE_IMAGE is not set: give the registry reference of the sluice image \
(docker build -f docker/Dockerfile -t REGISTRY/sluice:TAG . && docker push REGISTRY/sluice:TAG)."
    if (($(docker node ls -q | wc -l) > 1)) && [[ $image != */* ]]; then
        say "warning: SLUICE_IMAGE=$image names no registry; the other hosts cannot pull it." >&2
    fi
    docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image" >/dev/null 2>&1 \
        || die "image $image is neither local nor pullable; build and push it (docs/scaling.md)."
}

# One line per service: name running desired
stack_service_states() {
    docker service ls --filter "label=com.docker.stack.namespace=$(stack_name)" \
        --format '{{.Name}} {{.Replicas}}' \
        | sed -E 's#^([^ ]+) ([0-9]+)/([0-9]+).*#\1 \2 \3#' | sort
}

stack_wait_healthy() {
    local deadline=$((SECONDS + WAIT_TIMEOUT)) states pending service
    say "Waiting for every service of stack $(stack_name) to be running and healthy (up to ${WAIT_TIMEOUT}s) ..."
    while :; do
        states=$(stack_service_states)
        pending=$(awk '$2 != $3' <<<"$states")
        if [[ -n $states && -z $pending ]]; then
            say "All services are running and healthy."
            return 0
        fi
        if ((SECONDS >= deadline)); then
            say "Timed out after ${WAIT_TIMEOUT}s. Not ready (service running desired):" >&2
            sed 's/^/  /' <<<"$pending" >&2
            while read -r service _; do
                [[ -n $service ]] || continue
                say "--- last task states of $service ---" >&2
                docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$service" \
                    | head -n 5 | sed 's/^/  /' >&2
            done <<<"$pending"
            return 1
        fi
        sleep 3
    done
}

# A running container of one of the stack's services on this host (empty if it runs elsewhere).
stack_local_container() {
    docker ps -q --filter "label=com.docker.swarm.service.name=$(stack_name)_$1" | head -n 1
}

stack_exec() {  # stack_exec SERVICE COMMAND...
    local id
    id=$(stack_local_container "$1")
    [[ -n $id ]] || return 1
    shift
    docker exec "$id" "$@"
}

stack_running_nodes() {
    stack_exec rabbitmq1 rabbitmqctl -q cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null
}

# Quorum queues declared before every node had joined have fewer members, and RabbitMQ 3.10
# does not add joining nodes to them by itself (3.13 can): add every node to every queue.
stack_replicate_queues() {
    local deadline=$((SECONDS + WAIT_TIMEOUT)) running node
    if [[ -z $(stack_local_container rabbitmq1) ]]; then
        say "rabbitmq1 runs on another host; replicate the quorum queues there with:
  for n in ${RABBITMQ_NODES[*]}; do rabbitmq-queues grow rabbit@\$n all; done"
        return 0
    fi
    say "Waiting for the RabbitMQ cluster to have ${#RABBITMQ_NODES[@]} running nodes ..."
    until [[ $(stack_running_nodes) == "${#RABBITMQ_NODES[@]}" ]]; do
        ((SECONDS < deadline)) || die "the RabbitMQ cluster has $(stack_running_nodes || echo no) running node(s), \
not ${#RABBITMQ_NODES[@]}; see: docker service logs $(stack_name)_rabbitmq2"
        sleep 3
    done
    for node in "${RABBITMQ_NODES[@]}"; do
        stack_exec rabbitmq1 rabbitmq-queues -q grow "rabbit@$node" all >/dev/null \
            || die "could not add rabbit@$node to the quorum queues"
    done
    say "Every quorum queue has a member on each of ${RABBITMQ_NODES[*]}."
}

stack_endpoints() {
    cat <<EOF

sluice stack $(stack_name) is running.
  Ingest (TCP, msgpack frames): port $INGEST_PORT of every host labelled sluice.ingress
      sluice client --target HOST:$INGEST_PORT --count 1000
  API and dashboard: http://HOST:$HTTP_PORT/
More replicas:  ./run_pipeline.sh stack scale server=4 parser=3
Remove:         ./run_pipeline.sh stack down   (--volumes: also its data, secrets and configs)
EOF
}

stack_parse_scale() {  # stack_parse_scale svc=N... -> SCALE_ARGS (STACK_svc=N)
    local spec
    SCALE_ARGS=()
    for spec in "$@"; do
        [[ $spec =~ ^([a-z0-9]+)=([0-9]+)$ ]] || die "bad scale '$spec' (expected svc=N)"
        case ${BASH_REMATCH[1]} in
            server|parser|api|client) ;;
            *) die "cannot scale '${BASH_REMATCH[1]}': only server, parser, api and client scale; \
RabbitMQ and Elasticsearch nodes are one per labelled host, nginx runs on every ingress host" ;;
        esac
        SCALE_ARGS+=("$(stack_name)_$spec")
    done
}

stack_up() {
    local scales=()
    while (($#)); do
        case $1 in
            --scale) (($# >= 2)) || die "--scale needs svc=N"; scales+=("$2"); shift 2 ;;
            --scale=*) scales+=("${1#--scale=}"); shift ;;
            *) die "stack up: unknown argument '$1' (expected --scale svc=N)" ;;
        esac
    done
    stack_parse_scale ${scales[@]+"${scales[@]}"}
    stack_image
    stack_files
    stack_labels
    stack_secrets
    SLUICE_STACK=$(stack_name)
    # Swarm configs cannot change: a new digest makes new ones when a file changed.
    SLUICE_CONFIG_DIGEST=$(cat config/rabbitmq/cluster-node.sh config/rabbitmq/cluster.conf \
        config/nginx/nginx.conf | sha256sum | cut -c1-12)
    export SLUICE_STACK SLUICE_CONFIG_DIGEST
    say "Deploying stack $SLUICE_STACK (image $SLUICE_IMAGE) ..."
    docker stack deploy --prune --with-registry-auth "${STACK_ARGS[@]}" "$SLUICE_STACK"
    if ((${#SCALE_ARGS[@]})); then
        docker service scale --detach "${SCALE_ARGS[@]}" >/dev/null
    fi
    stack_wait_healthy
    stack_replicate_queues
    stack_endpoints
}

stack_scale() {
    (($#)) || die "stack scale: expected svc=N ..."
    stack_parse_scale "$@"
    [[ -n $(stack_service_states) ]] || die "stack $(stack_name) does not exist; deploy it with ./run_pipeline.sh stack up"
    docker service scale --detach "${SCALE_ARGS[@]}" >/dev/null
    stack_wait_healthy
}

stack_status() {
    if [[ -z $(stack_service_states) ]]; then
        say "Stack $(stack_name) does not exist; deploy it with ./run_pipeline.sh stack up"
        return 0
    fi
    docker stack services "$(stack_name)"
    say ""
    docker stack ps --filter desired-state=running \
        --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}' "$(stack_name)"
    if [[ -n $(stack_local_container rabbitmq1) ]]; then
        say ""
        say "RabbitMQ running nodes: $(stack_running_nodes || echo '?') of ${#RABBITMQ_NODES[@]}"
        say "Queues (name, ready messages, consumers, quorum members):"
        stack_exec rabbitmq1 rabbitmqctl -q list_queues name messages_ready consumers members 2>&1 \
            | sed 's/^/  /'
    fi
    stack_endpoints
}

stack_remove_named() {  # stack_remove_named volume|secret|config: what starts with "<stack>_"
    local kind=$1 name
    docker "$kind" ls --format '{{.Name}}' | while read -r name; do
        if [[ $name == "$(stack_name)_"* ]]; then
            docker "$kind" rm "$name" >/dev/null || say "could not remove $kind $name" >&2
        fi
    done
}

stack_down() {
    local volumes=0 stack deadline
    while (($#)); do
        case $1 in
            --volumes|-v) volumes=1; shift ;;
            *) die "stack down: unknown argument '$1' (expected --volumes)" ;;
        esac
    done
    stack=$(stack_name)
    docker stack rm "$stack" >/dev/null 2>&1 || true
    # `stack rm` returns before the containers and the network are gone.
    deadline=$((SECONDS + 120))
    while [[ -n $(docker ps -aq --filter "label=com.docker.stack.namespace=$stack") \
             || -n $(docker network ls -q --filter "label=com.docker.stack.namespace=$stack") ]]; do
        ((SECONDS < deadline)) || die "stack $stack still has containers or networks after 120s"
        sleep 2
    done
    say "Stack $stack is removed."
    ((volumes)) || return 0
    stack_remove_named volume
    stack_remove_named secret
    stack_remove_named config
    say "Removed the volumes, secrets and configs of stack $stack."
}

cmd_stack() {
    local sub=${1:-}
    (($#)) && shift
    case $sub in
        up|scale|status|down) ;;
        *) usage >&2; die "stack: expected up, scale, status or down, not '${sub}'" ;;
    esac
    stack_check_swarm
    "stack_$sub" "$@"
}

main() {
    local command=${1:-up}
    (($#)) && shift
    case $command in
        -h|--help|help) usage; return ;;
        stack) check_docker; load_offline_env; cmd_stack "$@"; return ;;
        up|scale|status|logs|demo|down) ;;
        *) usage >&2; die "unknown command '$command'" ;;
    esac
    check_docker
    find_compose
    load_offline_env
    "cmd_$command" "$@"
}

main "$@"
