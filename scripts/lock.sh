#!/usr/bin/env bash
# Re-resolve the pinned dependency set after editing pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv" 2>/dev/null || python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -e ".[dev,export]"
{
  echo "# Every package of the project's venv, pinned: pip install -c constraints.txt -e '.[dev,export]'."
  echo "# Regenerate after changing pyproject.toml: scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --all --exclude-editable | grep -vE '^(-e|pip==)' | sort -f
} > constraints.txt
rm -rf "$tmp"
echo "constraints.txt updated"
