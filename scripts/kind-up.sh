#!/usr/bin/env bash
# A local Kubernetes cluster running CryptoLens, for a machine with Docker, kind, kubectl and helm:
#   bash scripts/kind-up.sh            # cluster "cryptolens", release "cryptolens", namespace "cryptolens"
#   bash scripts/kind-up.sh --set config.provider=simulated   # extra arguments go to helm upgrade --install
# Idempotent: a second run reuses the cluster, rebuilds and reloads the image, upgrades the release.
# Undo with scripts/kind-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-cryptolens}
RELEASE=${RELEASE:-cryptolens}
NAMESPACE=${NAMESPACE:-cryptolens}
IMAGE=${IMAGE:-cryptolens:dev}
# ingress-nginx's manifest for kind, pinned (its controller runs on the ingress-ready node).
INGRESS_NGINX_MANIFEST=${INGRESS_NGINX_MANIFEST:-https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.1/deploy/static/provider/kind/deploy.yaml}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up: needs $tool on PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-up: docker is not running (or this user may not use it)" >&2; exit 1; }

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind-up: reusing cluster $CLUSTER"
else
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "kind-up: building $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "kind-up: installing ingress-nginx"
kubectl apply -f "$INGRESS_NGINX_MANIFEST"
kubectl wait --namespace ingress-nginx --for=condition=Ready pod \
  --selector=app.kubernetes.io/component=controller --timeout=180s

echo "kind-up: installing CryptoLens"
upgrade=no
helm status "$RELEASE" --namespace "$NAMESPACE" >/dev/null 2>&1 && upgrade=yes
# kind's default StorageClass "standard" backs the Redis volume; the image is local (never pulled).
# The ingress without authentication: kind-config.yaml maps it to this machine's loopback only.
helm upgrade --install "$RELEASE" helm/cryptolens \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set ingress.enabled=true --set ui.auth.allowAnonymous=true \
  --wait --timeout 10m "$@"
if [ "$upgrade" = yes ]; then  # a new image under the same tag: restart the app pods (not Redis) onto it
  app="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component!=redis"
  kubectl -n "$NAMESPACE" rollout restart deployment -l "$app" >/dev/null
  kubectl -n "$NAMESPACE" rollout status deployment -l "$app" --timeout=5m
fi

helm test "$RELEASE" --namespace "$NAMESPACE" --timeout 5m
echo
echo "CryptoLens is up: http://localhost/"
echo "End-to-end tests: python -m pytest tests/e2e   (context kind-$CLUSTER, namespace $NAMESPACE)"
