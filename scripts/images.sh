# Which images docker-compose.yml needs, and how run_pipeline.sh gets them on a machine
# that reaches no container registry. Sourced, not run; callers define say() and die()
# and a compose() function (run_pipeline.sh does).
#
# The decision, in order:
#   1. every image compose needs exists locally            -> nothing to do;
#   2. `docker pull` of the first missing one works         -> compose pulls the rest;
#   3. it fails because no registry answers (DNS, TCP, TLS) -> build them all locally with
#      scripts/build-offline-images.sh, then use them;
#   4. it fails for another reason (a wrong name, access denied) -> stop and say why.
# SLUICE_OFFLINE=0 forces the registry path: step 3 becomes an error.
#
# The plain `docker-compose up` (without run_pipeline.sh) finds the offline image names in a
# delimited block of `.env`, the file compose reads by itself. Only the lines between the
# two markers belong to this block: whatever else `.env` holds is kept as it is.

COMPOSE_ENV_FILE=.env
OFFLINE_ENV_FILE=.offline-images.env
ENV_BLOCK_BEGIN='# >>> sluice offline images (written by run_pipeline.sh from .offline-images.env; SLUICE_OFFLINE=0 removes it) >>>'
ENV_BLOCK_END='# <<< sluice offline images <<<'

# pull_error_is_unreachable TEXT: does this `docker pull` error mean no registry can be
# reached at all (rather than: this image does not exist, or access is denied)?
pull_error_is_unreachable() {
    local text=${1,,}
    case $text in
        *"no such host"* | *"temporary failure in name resolution"* | *"server misbehaving"* \
            | *"i/o timeout"* | *"connection refused"* | *"network is unreachable"* \
            | *"no route to host"* | *"tls handshake timeout"* | *"client.timeout exceeded"* \
            | *"connection reset by peer"* | *"x509: certificate"* | *"proxyconnect tcp"*)
            return 0 ;;
    esac
    return 1
}

# The images compose would pull: every service image and the Python base of the sluice
# build, without the sluice image itself (it is built here, never pulled).
pullable_images() {
    local config
    # A compose file compose cannot read (e.g. the passwords .env holds are missing) is an
    # error here, not "nothing to pull".
    config=$(compose config 2>&1) || { printf '%s\n' "$config" >&2; return 1; }
    awk '$1 == "image:" || $1 == "PYTHON_IMAGE:" { print $2 }' <<<"$config" \
        | tr -d "'\"" | { grep -vxF "${SLUICE_IMAGE:-sluice:latest}" || true; } | sort -u
}

# missing_images: the pullable images that do not exist locally, one per line.
missing_images() {
    local image images
    images=$(pullable_images) || return 1
    while read -r image; do
        [[ -n $image ]] || continue
        docker image inspect "$image" >/dev/null 2>&1 || printf '%s\n' "$image"
    done <<<"$images"
}

# env_block_write ENV_FILE SOURCE_FILE: put the KEY=VALUE lines of SOURCE_FILE between the
# markers in ENV_FILE, replacing an earlier block and keeping every other line.
env_block_write() {
    local target=$1 source=$2 tmp
    tmp=$(mktemp "${target}.XXXXXX")
    {
        [[ -f $target ]] && env_block_strip <"$target"
        printf '%s\n' "$ENV_BLOCK_BEGIN"
        grep -E '^[A-Z_][A-Z0-9_]*=' "$source"
        printf '%s\n' "$ENV_BLOCK_END"
    } >"$tmp"
    chmod --reference="$target" "$tmp" 2>/dev/null || chmod 600 "$tmp"
    mv "$tmp" "$target"
}

# env_block_remove ENV_FILE: drop the block, keep the rest. Returns 1 if there was none.
env_block_remove() {
    local target=$1 tmp
    [[ -f $target ]] && grep -qxF "$ENV_BLOCK_BEGIN" "$target" || return 1
    tmp=$(mktemp "${target}.XXXXXX")
    env_block_strip <"$target" >"$tmp"
    chmod --reference="$target" "$tmp" 2>/dev/null || true
    mv "$tmp" "$target"
}

env_block_strip() {
    awk -v begin="$ENV_BLOCK_BEGIN" -v end="$ENV_BLOCK_END" '
        $0 == begin { inside = 1; next }
        $0 == end   { inside = 0; next }
        !inside'
}

# Keep `.env` in step with the images run_pipeline.sh uses, so that a plain
# `docker-compose up` afterwards starts the same ones.
sync_compose_env() {
    if [[ ${SLUICE_OFFLINE:-} == 0 ]]; then
        if env_block_remove "$COMPOSE_ENV_FILE"; then
            say "SLUICE_OFFLINE=0: removed the offline image names from $COMPOSE_ENV_FILE (compose pulls from the registry)." >&2
        fi
    elif [[ -f $OFFLINE_ENV_FILE ]]; then
        env_block_write "$COMPOSE_ENV_FILE" "$OFFLINE_ENV_FILE"
    fi
}

build_offline_images() {
    local start=$SECONDS
    say "Building the images locally with scripts/build-offline-images.sh instead. The first time"
    say "this takes about 3 to 6 minutes (a Debian root filesystem, then the sluice, RabbitMQ, nginx"
    say "and Elasticsearch stand-in images side by side); later runs reuse them."
    say "(SLUICE_OFFLINE=0 makes run_pipeline.sh insist on the registry instead.)"
    ./scripts/build-offline-images.sh || die "building the offline images failed (see above); \
the log files are under ${SLUICE_OFFLINE_WORKDIR:-/var/tmp/sluice-offline}"
    say "Built the offline images in $((SECONDS - start))s."
    load_offline_env
}

# ensure_images: make sure compose will find every image it needs (see the top of this file).
ensure_images() {
    local missing first err
    sync_compose_env  # first: with SLUICE_OFFLINE=0, compose must not read the block below
    if ! missing=$(missing_images); then
        die "could not list the images docker-compose.yml needs (is '${COMPOSE[*]} config' valid?)"
    fi
    if [[ -n $missing ]]; then
        first=${missing%%$'\n'*}
        say "Image $first is not here; pulling it ..."
        if err=$(docker pull "$first" 2>&1 >/dev/null); then
            say "The registry answers; compose pulls the other images it needs."
        elif [[ ${SLUICE_OFFLINE:-} == 0 ]]; then
            die "cannot pull $first (SLUICE_OFFLINE=0 insists on the registry): ${err##*$'\n'}"
        elif pull_error_is_unreachable "$err"; then
            say "No container registry is reachable: ${err##*$'\n'}"
            build_offline_images
            missing=$(missing_images)
            [[ -z $missing ]] || die "still missing after the offline build: ${missing//$'\n'/ }"
        else
            die "cannot pull $first: ${err##*$'\n'}"
        fi
    fi
    sync_compose_env
}
