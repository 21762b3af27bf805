#!/usr/bin/env bash
# The test command: set up what is missing, then lint, type-check and run every test
# (unit tests, and integration tests against a real local stack the suite starts itself).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# the web page's browser test drives Debian's chromium (installed once, skipped when present)
.venv/bin/python -c "from cbir.stack.install import apt_install as a; \
a('browser test', ['chromium', 'chromium-driver'], ['chromium', 'chromedriver'])"
# the ANN benchmark's DiskANN runs in a venv of its own (diskannpy pins numpy 1.25)
.venv/bin/cbir bench ann --install-only
echo "[test] ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "[test] mypy"; .venv/bin/mypy .
echo "[test] layers"; .venv/bin/lint-imports
echo "[test] pytest"; exec .venv/bin/pytest "$@"
