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
echo "[test] layers"; .venv/bin/lint-imports
# mypy (a minute and more of one core) checks beside the tests, which wait on servers much
# of the time; its verdict counts as before: the command fails when either fails
mypy_log=$(mktemp)
echo "[test] mypy (beside pytest; its report follows pytest's)"
.venv/bin/mypy . >"$mypy_log" 2>&1 &
mypy_pid=$!
echo "[test] pytest"
status=0
.venv/bin/pytest "$@" || status=$?
echo "[test] mypy"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"; rm -f "$mypy_log"
if [ "$mypy_status" -ne 0 ]; then echo "[test] mypy failed"; fi
if [ "$status" -eq 0 ] && [ "$mypy_status" -ne 0 ]; then status=1; fi
exit "$status"
