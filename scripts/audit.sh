#!/usr/bin/env bash
# The dependency audit: every pinned package (constraints.txt, the whole resolved set) checked
# against the PyPI advisory database by pip-audit. It needs that database (pypi.org's JSON API,
# or api.osv.dev with AUDIT_SERVICE=osv): where neither can be reached it says so and fails,
# rather than report "no known vulnerabilities" for packages it could not look up.
set -euo pipefail
cd "$(dirname "$0")/.."
# a venv of its own: pip-audit's dependencies must not move the project's pins
tool="${XDG_CACHE_HOME:-$HOME/.cache}/cbir-stack/audit-venv"
[ -x "$tool/bin/pip-audit" ] || { python3.11 -m venv "$tool" && "$tool/bin/pip" install -q "pip-audit==2.10.1"; }
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
"$tool/bin/pip-audit" -r constraints.txt --no-deps --disable-pip --strict \
  --vulnerability-service "${AUDIT_SERVICE:-pypi}" "$@" >"$report" 2>&1 || status=$?
cat "$report"
if grep -q "could not be audited\|Failed to resolve\|ConnectionError" "$report"; then
  echo "[audit] the advisory database could not be reached from here: nothing was audited;" \
       "run this where pypi.org (or api.osv.dev: AUDIT_SERVICE=osv) answers" >&2
  exit 3
fi
exit "$status"
