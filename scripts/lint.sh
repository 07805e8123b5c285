#!/usr/bin/env bash
# Static checks, the same locally and in CI: ruff (lint + format check is not enforced) and strict mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
PYTHON="$(resolve_python "${SLUICE_PYTHON:-python3}")"
VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV=".venv-$VERSION"
[[ -x "$VENV/bin/ruff" ]] || die "run ./scripts/test.sh first (it creates $VENV with the lint tools)"
"$VENV/bin/ruff" check src tests scripts
"$VENV/bin/mypy"
