#!/usr/bin/env bash
# One command for the test suite: set up (if needed), then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k register
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Lint and type-check the product code first (fast), then the tests.
.venv/bin/ruff check --quiet gateway simulators bench
.venv/bin/mypy --no-error-summary gateway simulators
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
