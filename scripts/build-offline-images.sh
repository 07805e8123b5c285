#!/usr/bin/env bash
# Build every image docker-compose.yml needs without pulling anything from a registry.
#
# For machines that reach Debian's mirrors and PyPI but no container registry:
#   1. debootstrap a Debian bookworm root filesystem and `docker import` it as a Python base;
#   2. build sluice from docker/Dockerfile on top of that base;
#   3. build RabbitMQ, nginx and an Elasticsearch stand-in from Debian packages / PyPI
#      (docker/offline/*.Dockerfile).
# The image names are written to .offline-images.env, which run_pipeline.sh and the docker
# end-to-end test load, and to a delimited block of .env, which docker compose reads itself. The Elasticsearch stand-in is osmem-server (in-memory, OpenSearch
# compatible) behind tests/support/es_proxy.py; it is for demos and tests, not for data.
#
# Environment:
#   SLUICE_OFFLINE_PREFIX   image name prefix                  (default: sluice-offline)
#   SLUICE_OFFLINE_WORKDIR  where the root filesystem is built (default: /var/tmp/sluice-offline)
#   SLUICE_DEBIAN_MIRROR    Debian mirror        (default: the host's apt sources, else deb.debian.org)
#   SLUICE_REBUILD_BASE=1   debootstrap again even if the base image exists
#   SLUICE_OFFLINE_ONLY     build only these images, e.g. "base sluice" (default: all)
#   SLUICE_IMAGE            the sluice image's name (default: sluice:latest; CI uses sluice:src-<hash>)
# Runs from several clones at once take turns (the machine-wide lock "offline-images", see
# with_lock in scripts/lib.sh): they share the work directory and the image names.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
PREFIX=${SLUICE_OFFLINE_PREFIX:-sluice-offline}
WORKDIR=${SLUICE_OFFLINE_WORKDIR:-/var/tmp/sluice-offline}
ONLY=${SLUICE_OFFLINE_ONLY:-base sluice rabbitmq nginx elasticsearch}
ENV_FILE="$ROOT/.offline-images.env"

BASE_IMAGE="$PREFIX/python:3.11-bookworm"
SLUICE_IMAGE_NAME=${SLUICE_IMAGE:-sluice:latest}
RABBITMQ_IMAGE_NAME="$PREFIX/rabbitmq:3-management"
NGINX_IMAGE_NAME="$PREFIX/nginx:1.22"
ES_IMAGE_NAME="$PREFIX/elasticsearch-standin:latest"

log() { printf '[offline-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

declare -a TIMINGS=()
timed() {  # timed LABEL CMD... : run CMD, remember how long it took
    local label=$1 start=$SECONDS
    shift
    log "$label ..."
    "$@"
    TIMINGS+=("$(printf '%-58s %4ds' "$label" $((SECONDS - start)))")
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror the host already uses for bookworm: the network may only allow that one.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) { suites = " " $i " " }
                    if ($i ~ /^Types:/)  { types = $i }
                }
                if (types ~ /deb( |$)/ && suites ~ / bookworm /) { split(uris, u, " "); print u[1]; exit }
            }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        uri=$(awk '$1 == "deb" {
                       line = $0; gsub(/\[[^]]*\]/, "", line); split(line, f, /[ \t]+/)
                       if (f[3] == "bookworm") { print f[2]; exit }
                   }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    echo "http://deb.debian.org/debian"
}

preflight() {
    mkdir -p "$WORKDIR"
    command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
    docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (start dockerd; see scripts/ci-docker.sh)"
    if wants base && { [[ ${SLUICE_REBUILD_BASE:-0} == 1 ]] || ! image_exists "$BASE_IMAGE"; }; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        [[ $(id -u) == 0 ]] || die "debootstrap needs root"
    fi
    [[ -f $ROOT/tests/support/es_proxy.py ]] || ! wants elasticsearch \
        || die "tests/support/es_proxy.py is missing (the Elasticsearch stand-in needs it)"
}

build_base() {
    if [[ ${SLUICE_REBUILD_BASE:-0} != 1 ]] && image_exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists; skipping debootstrap (SLUICE_REBUILD_BASE=1 forces it)"
        return
    fi
    local mirror=${SLUICE_DEBIAN_MIRROR:-$(host_mirror)}
    local rootfs="$WORKDIR/rootfs"
    log "debootstrap bookworm from $mirror into $rootfs"
    rm -rf "$rootfs"
    mkdir -p "$WORKDIR"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORKDIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORKDIR/debootstrap.log" >&2; die "debootstrap failed (log: $WORKDIR/debootstrap.log)"; }

    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
EOF
    # The host's bundle: where TLS is re-signed by a local CA, pip inside builds needs it.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # Package installs in image builds must not try to start services.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    # Keep image builds lean, as the official Debian images do.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$rootfs/etc/apt/apt.conf.d/90sluice-no-recommends"
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
        "$rootfs"/tmp/* "$rootfs"/root/.cache

    tar -C "$rootfs" --numeric-owner -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# --network host: builds reach PyPI and Debian the way the host does.
build() {  # build TAG DOCKERFILE CONTEXT [ARGS...]
    local tag=$1 dockerfile=$2 context=$3
    shift 3
    local logfile="$WORKDIR/build-${tag//[\/:]/_}.log"
    mkdir -p "$WORKDIR"
    # The classic builder: it needs no buildx plugin and honours --network host on old engines.
    DOCKER_BUILDKIT=0 docker build --network host -t "$tag" -f "$dockerfile" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" "$context" >"$logfile" 2>&1 \
        || { tail -n 40 "$logfile" >&2; die "building $tag failed (log: $logfile)"; }
}

build_sluice() {
    [[ -f $ROOT/pyproject.toml ]] || die "pyproject.toml is missing"
    build "$SLUICE_IMAGE_NAME" "$ROOT/docker/Dockerfile" "$ROOT" --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
}

build_rabbitmq() {
    build "$RABBITMQ_IMAGE_NAME" "$ROOT/docker/offline/rabbitmq.Dockerfile" "$ROOT/docker/offline"
}

build_nginx() {
    build "$NGINX_IMAGE_NAME" "$ROOT/docker/offline/nginx.Dockerfile" "$ROOT/docker/offline"
}

build_elasticsearch() {
    # A context of its own: the repository's .dockerignore keeps tests/ out of the sluice image.
    local ctx="$WORKDIR/es-standin-context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$ROOT/tests/support/es_proxy.py" "$ROOT/docker/offline/es-standin-entrypoint.sh" "$ctx/"
    build "$ES_IMAGE_NAME" "$ROOT/docker/offline/elasticsearch-standin.Dockerfile" "$ctx"
}

write_env_file() {
    cat >"$ENV_FILE" <<EOF
# Written by scripts/build-offline-images.sh: images built locally, without a registry.
# run_pipeline.sh and tests/deploy load this file when it exists (SLUICE_OFFLINE=0 ignores it).
SLUICE_PYTHON_IMAGE=$BASE_IMAGE
SLUICE_IMAGE=$SLUICE_IMAGE_NAME
RABBITMQ_IMAGE=$RABBITMQ_IMAGE_NAME
NGINX_IMAGE=$NGINX_IMAGE_NAME
ELASTICSEARCH_IMAGE=$ES_IMAGE_NAME
SLUICE_BUILD_NETWORK=host
EOF
    # A plain `docker-compose up` reads .env by itself: the same names go into a delimited
    # block there, next to whatever else .env holds.
    if [[ ${SLUICE_OFFLINE:-} != 0 ]]; then
        # shellcheck source=scripts/images.sh
        source "$ROOT/scripts/images.sh"
        (cd "$ROOT" && env_block_write "$COMPOSE_ENV_FILE" "$OFFLINE_ENV_FILE")
        log "image names also written to the offline block of $ROOT/$COMPOSE_ENV_FILE (read by docker-compose up)"
    fi
}

main() {
    local total=$SECONDS
    preflight
    wants base && timed "base ($BASE_IMAGE)" build_base
    image_exists "$BASE_IMAGE" || die "base image $BASE_IMAGE is missing"
    # The images on top of the base do not depend on each other: build them side by side.
    local -A jobs=()
    local name started=$SECONDS failed=0
    for name in sluice rabbitmq nginx elasticsearch; do
        wants "$name" || continue
        log "building $name ..."
        ( start=$SECONDS; "build_$name"; echo $((SECONDS - start)) >"$WORKDIR/$name.seconds" ) &
        jobs[$name]=$!
    done
    # Empty arrays are guarded: "${a[@]}" of an empty array is unbound under set -u in bash < 4.4.
    if ((${#jobs[@]})); then
        for name in "${!jobs[@]}"; do
            if wait "${jobs[$name]}"; then
                TIMINGS+=("$(printf '%-58s %4ds' "$name" "$(cat "$WORKDIR/$name.seconds")")")
            else
                failed=1
            fi
        done
        TIMINGS+=("$(printf '%-58s %4ds' "(images in parallel)" $((SECONDS - started)))")
    fi
    ((failed == 0)) || die "some images failed to build (see above)"
    write_env_file

    log "timings:"
    local t
    for t in ${TIMINGS[@]+"${TIMINGS[@]}"}; do log "  $t"; done
    log "  $(printf '%-58s %4ds' total $((SECONDS - total)))"
    log "image names written to $ENV_FILE:"
    grep -v '^#' "$ENV_FILE" >&2
    docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' \
        | grep -E "^  ($PREFIX/|${SLUICE_IMAGE_NAME%%:*}:)" >&2 || true
}

with_lock offline-images main "$@"
