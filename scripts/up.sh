#!/usr/bin/env bash
# Sets up CryptoLens in a project-local virtual environment and runs the whole stack:
# Redis, Fetch, Core, Alerts and the dashboard. Extra arguments go to `cryptolens up`.
#   bash scripts/up.sh
#   bash scripts/up.sh --provider live --symbols BTC-USD,ETH-USD
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
exec cryptolens up "$@"
