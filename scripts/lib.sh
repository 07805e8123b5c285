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

apt_updated=0
apt_install() {
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 \
        || die "missing packages: $*; install them with: sudo apt-get install -y $*"
    if [[ "$apt_updated" == 0 ]]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
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
    # Debian's package may try to start the node itself; only start one if none is up.
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
        log "starting rabbitmq-server"
        rabbitmq-server -detached
    fi
    local i
    for i in $(seq 1 60); do
        rabbitmqctl -q await_startup >/dev/null 2>&1 && port_open 127.0.0.1 5672 && break
        sleep 2
    done
    port_open 127.0.0.1 5672 || die "rabbitmq-server did not come up; see /var/log/rabbitmq/"
    log "RabbitMQ is up"
}
