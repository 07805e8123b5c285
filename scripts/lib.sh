# Shared shell helpers for scripts/*.sh. Sourced, not run.

log() { printf '[sluice] %s\n' "$*" >&2; }
die() { printf '[sluice] error: %s\n' "$*" >&2; exit 1; }

# resolve_python 3.9 | 3.11 | python3 | /path -> an interpreter path
resolve_python() {
    local want="$1" candidate
    if [[ "$want" == */* ]]; then
        [[ -x "$want" ]] || die "no interpreter at $want"
        echo "$want"; return
    fi
    if [[ "$want" =~ ^[0-9]+\.[0-9]+$ ]]; then
        if command -v pyenv >/dev/null 2>&1; then
            for candidate in "$(pyenv root)"/versions/"$want".*/bin/python3; do
                [[ -x "$candidate" ]] && { echo "$candidate"; return; }
            done
        fi
        candidate="$(command -v "python$want" 2>/dev/null || true)"
        if [[ -n "$candidate" ]] && "$candidate" -c 'import sys' 2>/dev/null; then
            echo "$candidate"; return
        fi
        die "Python $want not found: install it (pyenv install $want, or apt-get install python$want python$want-venv)"
    fi
    command -v "$want" >/dev/null 2>&1 || die "$want not found"
    command -v "$want"
}

# with_lock NAME CMD...: run CMD (a command or a shell function) holding the machine-wide
# lock /var/lock/sluice-NAME.lock, so that test runs sharing a machine (two CI clones, say)
# take turns at what exists once per machine: apt/dpkg, the RabbitMQ node, dockerd, the image
# builds, the single-node swarm. The same lock as `flock /var/lock/sluice-NAME.lock CMD` and
# tests/support/locks.py. The kernel releases it when the holder dies (and every process
# that inherited descriptor 9: a daemon started under the lock must close it). Waits at most
# SLUICE_LOCK_TIMEOUT seconds (default 1500).
with_lock() {
    local name=$1; shift
    local dir=${SLUICE_LOCK_DIR:-/var/lock}
    [[ -w $dir ]] || dir=${TMPDIR:-/tmp}
    local file="$dir/sluice-$name.lock"
    (
        flock -w "${SLUICE_LOCK_TIMEOUT:-1500}" 9 || die "waited ${SLUICE_LOCK_TIMEOUT:-1500} s for $file (held by: $(cat "$file" 2>/dev/null))"
        echo "pid $BASHPID since $(date -u +%FT%TZ): $0" >"$file" 2>/dev/null || true
        "$@"
    ) 9>>"$file"
}

# Under the apt lock; the dpkg lock is waited for too, since a person may run apt by hand.
_apt_install_locked() {
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
    # Update only when the package lists do not know a package (they are shared and slow).
    if ! "${apt[@]}" install "$@" >/dev/null 2>&1; then
        "${apt[@]}" update >/dev/null
        "${apt[@]}" install "$@" >/dev/null
    fi
}

apt_install() {
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 \
        || die "missing packages: $*; install them with: sudo apt-get install -y $*"
    log "apt-get install $*"
    with_lock apt _apt_install_locked "$@"
}


port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# venv_for PYTHON -> the project's virtualenv directory for that interpreter
venv_for() {
    echo ".venv-$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
}

# ensure_binary PATH PACKAGE...: install the packages when PATH is missing.
ensure_binary() {
    local path="$1"; shift
    [[ -e "$path" ]] || apt_install "$@"
    [[ -e "$path" ]] || die "$path is still missing after installing $*"
}

# source_tag: a tag naming the sluice image built from this checkout's files (those the
# image's build context holds, per .dockerignore, and the Dockerfile). Two clones of one
# commit share an image; clones of different commits never overwrite each other's.
source_tag() {
    local path paths=() sum
    for path in pyproject.toml README.md LICENSE src docker/Dockerfile docker/sluice-healthcheck; do
        [[ -e $path ]] && paths+=("$path")
    done
    sum=$(find "${paths[@]}" -type f ! -name '*.py[co]' ! -name '*.so' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' \
              -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum)
    echo "src-${sum:0:16}"
}

# A broker for the tests: SLUICE_AMQP_URL if set, else a local rabbitmq-server. The
# binaries are installed either way: some tests start a private node of their own.
ensure_rabbitmq() {
    ensure_binary /usr/sbin/rabbitmq-server rabbitmq-server
    if [[ -n "${SLUICE_AMQP_URL:-}" ]]; then
        log "using RabbitMQ at SLUICE_AMQP_URL"
        return
    fi
    if port_open 127.0.0.1 5672; then
        log "RabbitMQ already listening on localhost:5672"
        return
    fi
    # One node per machine: a run that finds another starting it waits for that one.
    with_lock rabbitmq _start_rabbitmq
}

_start_rabbitmq() {
    if port_open 127.0.0.1 5672; then
        log "RabbitMQ already listening on localhost:5672"
        return
    fi
    # Debian's package may try to start the node itself; only start one if none is up.
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
        log "starting rabbitmq-server"
        # 9>&-: a daemon must not inherit with_lock's descriptor, or it holds the lock for
        # as long as it runs and every later with_lock rabbitmq waits for nothing.
        rabbitmq-server -detached 9>&-
    fi
    local i
    for i in $(seq 1 60); do
        rabbitmqctl -q await_startup >/dev/null 2>&1 && port_open 127.0.0.1 5672 && break
        sleep 2
    done
    port_open 127.0.0.1 5672 || die "rabbitmq-server did not come up; see /var/log/rabbitmq/"
    log "RabbitMQ is up"
}
