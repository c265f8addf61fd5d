#!/usr/bin/env bash
# Creates .venv (Python >= 3.11, installed with uv) and the Azurite emulator under .tools/.
# Idempotent: re-running only installs what changed.
#   scripts/setup.sh dev       app + test tools (what `make test` and CI use)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
AZURITE_VERSION="3.35.0"

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "setup: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

case "$profile" in
  dev) reqs=(requirements-dev.txt) ;;
  *) echo "setup: unknown profile '$profile' (use: dev)" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
fi

stamp=".venv/.installed-$profile"
want="$(cat "${reqs[@]}" requirements.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing ${reqs[*]} with uv"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/uv pip install --quiet --python .venv/bin/python "${args[@]}"
  echo "$want" > "$stamp"
fi

if [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm (Node.js >= 18) is required for Azurite" >&2; exit 1; }
  echo "setup: installing azurite@$AZURITE_VERSION into .tools/"
  npm install --silent --no-audit --no-fund --prefix .tools "azurite@$AZURITE_VERSION" >/dev/null
fi
echo "setup: ready ($profile)"
