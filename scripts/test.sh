#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian/Ubuntu machine, then runs it.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k store   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests use for real: redis-server, chromium (UI), promtool/prometheus (scraping, rules).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)  # creates the Redis Cluster of test_redis_cluster.py
command -v openssl >/dev/null || need+=(openssl)        # the CA of the Redis TLS tests
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
# The image build and run (tests/unit/test_chart_image.py, scripts/image-smoke.sh).
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root" >&2
  fi
fi

# Python packages in a project-local virtual environment.
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
python -m pip install -q -e ".[test]"

python -m pytest "$@"
