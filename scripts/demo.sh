#!/usr/bin/env bash
# One command for the main job: set up (if needed), then run `kgw demo`.
# Extra arguments go to `kgw demo`, e.g. scripts/demo.sh --kindergartens 2314
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/kgw demo "$@"
