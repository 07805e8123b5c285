#!/usr/bin/env bash
# Prepare a CI machine for the docker end-to-end test (tests/deploy): install the Docker
# engine, compose and debootstrap when missing, start the daemon when it is not running (CI
# machines here have no systemd), then build every image locally
# (scripts/build-offline-images.sh), since no registry is reachable.
#
# Safe to run from several clones at once: apt-get, starting dockerd and the image builds each
# hold a machine-wide lock (scripts/lib.sh with_lock), and the sluice image is tagged with a
# hash of this checkout's sources (sluice:src-<hash>) unless SLUICE_IMAGE names one, so
# clones of different commits never overwrite each other's image.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
start=$SECONDS

log() { printf '[ci-docker] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (apt-get, dockerd, debootstrap)"

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi

# One daemon per machine: whoever holds the lock starts it, the others find it running.
start_dockerd() {
    docker info >/dev/null 2>&1 && return
    command -v dockerd >/dev/null 2>&1 || die "dockerd is missing (apt-get install docker.io)"
    log "starting dockerd (log: /var/log/dockerd.log)"
    # A session of its own (setsid): the engine outlives the shell, job or CI step that
    # happened to start it, whose process group may be killed as a whole when it ends.
    # 9>&-: without with_lock's descriptor, or the daemon and its containers would hold the
    # lock for as long as they run.
    setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null 9>&- &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 30 /var/log/dockerd.log >&2; die "dockerd did not come up"; }
}
docker info >/dev/null 2>&1 || with_lock dockerd start_dockerd
log "docker $(docker version -f '{{.Server.Version}}' 2>/dev/null) is up after $((SECONDS - start))s"

SLUICE_IMAGE=${SLUICE_IMAGE:-sluice:$(source_tag)} "$ROOT/scripts/build-offline-images.sh"
log "ready after $((SECONDS - start))s"
