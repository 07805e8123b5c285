#!/usr/bin/env bash
# Static checks, the same locally and in CI: ruff and strict mypy, from the virtualenv
# that scripts/test.sh made for SLUICE_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
VENV="$(venv_for "$(resolve_python "${SLUICE_PYTHON:-python3}")")"
[[ -x "$VENV/bin/ruff" ]] || die "run ./scripts/test.sh first (it creates $VENV with the lint tools)"
"$VENV/bin/ruff" check src tests scripts
"$VENV/bin/mypy"
