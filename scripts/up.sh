#!/usr/bin/env bash
# Sets up CryptoLens in a project-local virtual environment and runs the whole stack:
# Redis, Fetch, Core, Alerts and the dashboard. Extra arguments go to `cryptolens up`.
#   bash scripts/up.sh
#   bash scripts/up.sh --provider live --symbols BTC-USD,ETH-USD
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then  # Debian splits venv out of python3
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "python3 has no venv module: apt-get install python3-venv" >&2; exit 1
  fi
fi
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
exec cryptolens up "$@"
