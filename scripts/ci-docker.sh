#!/usr/bin/env bash
# Prepare a CI machine for the docker end-to-end test (tests/deploy): install the Docker
# engine, compose and debootstrap when missing, start the daemon when it is not running (CI
# machines here have no systemd), then build every image locally
# (scripts/build-offline-images.sh), since no registry is reachable.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$SECONDS

log() { printf '[ci-docker] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (apt-get, dockerd, debootstrap)"

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || die "dockerd is missing (apt-get install docker.io)"
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 30 /var/log/dockerd.log >&2; die "dockerd did not come up"; }
fi
log "docker $(docker version -f '{{.Server.Version}}' 2>/dev/null) is up after $((SECONDS - start))s"

"$ROOT/scripts/build-offline-images.sh"
log "ready after $((SECONDS - start))s"
