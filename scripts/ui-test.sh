#!/usr/bin/env bash
# The web pages in a real browser: installs Debian's chromium and chromium-driver if missing and
# selenium and oidc-provider-mock (PyPI) into a venv, builds the CLI, and runs tests/ui/test_pages.py, which starts
# `docstore serve` (and, for the OIDC sign-in, the provider) on 127.0.0.1 ports it picks and stops them.
# Usage: scripts/ui-test.sh [--screenshots DIR]   (DIR: where the pages' pictures go, e.g. docs/ui)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [ "${1:-}" = "--screenshots" ]; then export DOCSTORE_UI_SCREENSHOTS=$(realpath -m "$2"); fi
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
  "${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { "${sudo_[@]}" apt-get update -qq >/dev/null && "${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
venv=${DOCSTORE_UI_VENV:-$HOME/.cache/docstore-ui-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import selenium' 2>/dev/null \
  || "$venv/bin/pip" install -q --disable-pip-version-check 'selenium>=4.20,<5'
"$venv/bin/python" -c 'import oidc_provider_mock' 2>/dev/null \
  || "$venv/bin/pip" install -q --disable-pip-version-check 'oidc-provider-mock>=0.3,<0.4'
target=${CARGO_TARGET_DIR:-$here/target}
cargo build -q -p docstore-cli --locked
export DOCSTORE_BIN=$target/debug/docstore CHROMIUM=$(command -v chromium) CHROMEDRIVER=$(command -v chromedriver)
# Selenium must not look for a driver on the network: the Debian one is given.
export SE_OFFLINE=true
"$venv/bin/python" -m unittest -v tests/ui/test_pages.py
