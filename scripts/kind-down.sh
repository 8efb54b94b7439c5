#!/usr/bin/env bash
# Deletes the kind cluster scripts/kind-up.sh made, with everything in it (the Redis volume too).
#   bash scripts/kind-down.sh
set -euo pipefail

CLUSTER=${CLUSTER:-cryptolens}
command -v kind >/dev/null || { echo "kind-down: needs kind on PATH" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "kind-down: no cluster named $CLUSTER"
fi
