#!/usr/bin/env bash
# One command for the test suite: set up (if needed), then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k register
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Lint and type-check first (fast), then the tests: the product (gateway, gbplatform) under
# mypy --strict, the simulators under mypy's defaults (pyproject.toml [tool.mypy]).
.venv/bin/ruff check --quiet gateway platform simulators bench tests
.venv/bin/ruff format --check --quiet gateway platform simulators bench tests
.venv/bin/mypy --no-error-summary --strict gateway platform/gbplatform
.venv/bin/mypy --no-error-summary simulators
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
