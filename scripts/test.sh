#!/usr/bin/env bash
# The test command: set up what is missing, then lint, type-check and run every test
# (unit tests, and integration tests against a real local stack the suite starts itself).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "[test] ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "[test] mypy"; .venv/bin/mypy .
echo "[test] pytest"; exec .venv/bin/pytest "$@"
