#!/usr/bin/env bash
# Everything a fresh machine needs, idempotently: the project's venv (.venv), the servers of
# the local stack (`cbir stack install`), and the docker compose plugin used to validate
# docker-compose.yml. A second run with everything present takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*"; }

python=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

uv_version=0.13.9
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $python"
  "$python" -m venv .venv
fi
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.cbir-deps 2>/dev/null)" != "$want" ]; then
  say "installing the project's dependencies (pinned by constraints.txt)"
  # uv installs the same pinned set as pip in seconds from its cache (pip: minutes, torch's
  # CUDA wheels unpacked again each time); pip does it where uv cannot be had
  if .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version" \
    && .venv/bin/uv pip install -q --python .venv/bin/python -c constraints.txt -e ".[dev,export]"
  then :
  else
    say "uv could not install them: pip does"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,export]"
  fi
  echo "$want" > .venv/.cbir-deps
fi

say "installing the local stack's servers"
.venv/bin/cbir stack install

# docker compose validates docker-compose.yml without an engine; where the plugin is missing it
# is built from its Go module (a few minutes, once) into the stack home.
compose_version=v2.40.3
if ! docker compose version >/dev/null 2>&1 && command -v go >/dev/null; then
  home=$(.venv/bin/python -c 'from cbir.settings import get_settings; print(get_settings().stack.home)')
  binary="$home/tools/compose-$compose_version/docker-compose"
  if [ ! -x "$binary" ]; then
    say "building docker compose $compose_version (once)"
    source_dir=$(go mod download -json "github.com/docker/compose/v2@$compose_version" \
      | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$(dirname "$binary")"
    (cd "$source_dir" && CGO_ENABLED=0 GOFLAGS=-trimpath go build \
      -ldflags "-X github.com/docker/compose/v2/internal.Version=$compose_version" \
      -o "$binary.tmp" ./cmd) && mv "$binary.tmp" "$binary"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$binary" "$HOME/.docker/cli-plugins/docker-compose"
fi
say "ready"
