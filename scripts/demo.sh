#!/usr/bin/env bash
# The demo: set up what is missing, start the local stack, show it working.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/cbir stack up
.venv/bin/cbir check
cat <<MSG

The stack is up. Try:
  .venv/bin/cbir stack status          # health, ports, pids, memory
  .venv/bin/cbir stack logs kafka      # any service's log
  .venv/bin/cbir stack down            # stop it; the data stays for the next \`up\`
MSG
