#!/usr/bin/env bash
# Creates .venv (Python >= 3.11, installed with uv) and the Azurite emulator under .tools/.
# Idempotent: re-running only installs what changed.
#   scripts/setup.sh full      app + offline stack + test tools (default; `make test`, `make demo`, CI)
#   scripts/setup.sh dev       app + test tools only (no torch): enough for the Azure-path tests
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-full}"
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
  full) reqs=(requirements-offline.txt requirements-dev.txt) ;;
  dev) reqs=(requirements-dev.txt) ;;
  *) echo "setup: unknown profile '$profile' (use: full or dev)" >&2; exit 2 ;;
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
  if [ "$profile" = full ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # torch first, with pip: pip honours the machine's wheel caches/indexes, and TORCH_INDEX_URL
    # (e.g. https://download.pytorch.org/whl/cpu) picks the small CPU build instead of PyPI's
    # CUDA build on Linux. uv then sees the pin satisfied and leaves it alone.
    torch_pin="$(grep -E '^torch==' requirements-offline.txt | cut -d' ' -f1)"
    echo "setup: installing $torch_pin"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
      ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$torch_pin"
  fi
  echo "setup: installing ${reqs[*]} with uv"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/uv pip install --quiet --python .venv/bin/python "${args[@]}"
  echo "$want" > "$stamp"
fi

# Infra checks (tests/infra/test_infra.py): checkov + its pycep-parser in their own venv, never in .venv
# (checkov pins packaging/networkx/cachetools older than the app's). Reinstalled when
# requirements-infra.txt changes.
infra_want="$(sha256sum requirements-infra.txt | cut -c1-16)"
if [ "$(cat .tools/checkov-venv/.installed 2>/dev/null)" != "$infra_want" ]; then
  echo "setup: installing requirements-infra.txt into .tools/checkov-venv with uv"
  .venv/bin/uv venv --quiet --allow-existing --python "$python_bin" .tools/checkov-venv
  .venv/bin/uv pip install --quiet --python .tools/checkov-venv/bin/python -r requirements-infra.txt
  echo "$infra_want" > .tools/checkov-venv/.installed
fi

if [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm (Node.js >= 18) is required for Azurite" >&2; exit 1; }
  echo "setup: installing azurite@$AZURITE_VERSION into .tools/"
  npm install --silent --no-audit --no-fund --prefix .tools "azurite@$AZURITE_VERSION" >/dev/null
fi

# The dashboard's browser tests (testing/browser.py): Playwright drives the system Chromium and never
# downloads one. Installed with apt where we may (root, or passwordless sudo); otherwise those tests
# are skipped, and say so. Never fails the setup. Same lookup as testing/browser.py's find_chromium().
have_chromium() {
  if [ -n "${CHROMIUM:-}" ] && command -v "$CHROMIUM" >/dev/null 2>&1; then return 0; fi
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$name" >/dev/null 2>&1 && return 0
  done
  return 1
}
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}
may_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}
apt_install_chromium() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=120 chromium >>"$apt_log" 2>&1
}
case "$profile" in
  full | dev)
    if ! have_chromium; then
      why="installing it needs root or passwordless sudo, and apt-get"
      apt_log=".tools/apt-chromium.log"
      if may_apt; then
        echo "setup: installing chromium (browser tests)"
        mkdir -p .tools && : >"$apt_log"
        why="apt-get failed, see $apt_log"
        if apt_install_chromium; then
          why=""
        elif grep -q "Unable to locate package" "$apt_log" &&
             as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$apt_log" 2>&1 &&
             apt_install_chromium; then
          why=""
        fi
      fi
      if [ -n "$why" ] || ! have_chromium; then
        echo "setup: no Chromium (${why:-not on PATH after apt-get install}): the dashboard's browser tests" \
          "will be skipped; to run them, install chromium or set CHROMIUM=/path/to/chrome" >&2
      fi
    fi
    ;;
esac
echo "setup: ready ($profile)"
