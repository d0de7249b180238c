#!/usr/bin/env bash
# One command for the test suite: set up (if needed), then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k register
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
