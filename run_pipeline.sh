#!/usr/bin/env bash
# Build, start, scale and inspect the sluice pipeline with Docker Compose.
#
#   ./run_pipeline.sh                       build, start everything, wait until healthy
#   ./run_pipeline.sh up [--scale svc=N]... same, with replica counts (e.g. --scale server=3)
#   ./run_pipeline.sh scale svc=N...        change replica counts of running services
#   ./run_pipeline.sh status                containers, health, endpoints
#   ./run_pipeline.sh logs [svc...]         logs (extra flags go to compose, e.g. -f)
#   ./run_pipeline.sh demo                  pause the load generators, stream a fixed number of
#                                           records, wait until they are indexed, print aggregates
#   ./run_pipeline.sh down [--volumes]      stop and remove (--volumes: and the data)
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
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-sluice}
INGEST_PORT=${SLUICE_INGEST_PORT:-7000}
HTTP_PORT=${SLUICE_HTTP_PORT:-8000}
RABBITMQ_UI_PORT=${SLUICE_RABBITMQ_UI_PORT:-15672}
ES_PORT=${SLUICE_ES_PORT:-9200}
WAIT_TIMEOUT=${SLUICE_WAIT_TIMEOUT:-300}

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

compose() { "${COMPOSE[@]}" "$@"; }

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
    cat <<EOF

sluice is running (project $COMPOSE_PROJECT_NAME).
  Ingest (TCP, msgpack frames):  localhost:$INGEST_PORT
      sluice client --target localhost:$INGEST_PORT --count 1000    (or: ./run_pipeline.sh demo)
  API:                           http://localhost:$HTTP_PORT/api/v1/
      curl -s http://localhost:$HTTP_PORT/api/v1/stats
      curl -s 'http://localhost:$HTTP_PORT/api/v1/sensors?size=5'
  Dashboard:                     http://localhost:$HTTP_PORT/
  RabbitMQ management UI:        http://localhost:$RABBITMQ_UI_PORT/  (user ${RABBITMQ_USER:-sluice}, password ${RABBITMQ_PASSWORD:-sluice})
  Elasticsearch:                 http://localhost:$ES_PORT/
More replicas:  ./run_pipeline.sh scale server=3 parser=2
Stop:           ./run_pipeline.sh down   (add --volumes to delete the data)
EOF
}

# Arrays are expanded as ${a[@]+"${a[@]}"}: bash < 4.4 (macOS's /bin/bash is 3.2) treats
# "${a[@]}" of an empty array as unbound under `set -u`.

# shellcheck disable=SC2120  # demo calls it without arguments
cmd_up() {
    local args=() service
    while (($#)); do
        case $1 in
            --scale) (($# >= 2)) || die "--scale needs svc=N"; args+=(--scale "$2"); shift 2 ;;
            --scale=*) args+=(--scale "${1#--scale=}"); shift ;;
            *) die "up: unknown argument '$1' (expected --scale svc=N)" ;;
        esac
    done
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

api_get() { curl -fsS --max-time 10 "http://localhost:$HTTP_PORT$1"; }

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

main() {
    local command=${1:-up}
    (($#)) && shift
    case $command in
        -h|--help|help) usage; return ;;
        up|scale|status|logs|demo|down) ;;
        *) usage >&2; die "unknown command '$command'" ;;
    esac
    check_docker
    find_compose
    load_offline_env
    "cmd_$command" "$@"
}

main "$@"
