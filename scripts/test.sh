#!/usr/bin/env bash
# Runs sluice's test suite on a fresh Debian/Ubuntu machine.
#
#   ./scripts/test.sh [pytest args...]
#
# Creates a virtualenv (.venv-<python version>), installs sluice with its test extras,
# makes sure the services the tests use are there (RabbitMQ, nginx with the stream module,
# Chromium; gcc, which builds the measurement parser's compiled path), then runs pytest. Settings:
#   SLUICE_PYTHON=3.11|3.9|/path/to/python   interpreter to test with (default: python3)
#   SLUICE_AMQP_URL=amqp://...               use this broker instead of starting one
#   SLUICE_ES_URL=http://...                 use a real Elasticsearch instead of the stand-in
# The Docker end-to-end test (marker `docker`) needs a Docker engine and locally built
# images: scripts/ci-docker.sh installs the engine, starts it and builds them, unless the
# pytest arguments deselect that test (-m "not docker").
# Anything missing is installed with apt-get when running as root; otherwise the script
# stops and says what to install. Tests are never skipped for a missing service.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

PYTHON="$(resolve_python "${SLUICE_PYTHON:-python3}")"
VENV="$(venv_for "$PYTHON")"

log "python $PYTHON, virtualenv $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# A C compiler, for the measurement parser's compiled fast path (the tests check it is built).
ensure_binary /usr/bin/gcc gcc libc6-dev
"$VENV/bin/python" -m pip install -q -e ".[test,lint]"

# Checked by file, not package name: any nginx with the stream module will do.
ensure_binary /usr/sbin/nginx nginx-light
ensure_binary /usr/lib/nginx/modules/ngx_stream_module.so libnginx-mod-stream
ensure_binary /usr/bin/chromium chromium
ensure_rabbitmq
if [[ "$*" != *"not docker"* ]]; then
    ./scripts/ci-docker.sh
fi

log "pytest $*"
exec "$VENV/bin/python" -m pytest "$@"
