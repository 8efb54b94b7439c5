#!/usr/bin/env bash
# Builds the Dockerfile with Debian's podman (no registry: the python:3.11-slim base is made with
# debootstrap and imported), runs Fetch, Core, Alerts and the dashboard from the image on loopback
# against a local password-protected redis-server, and checks health, GetStats and the dashboard
# through the containers. Prints the image size. Needs root, podman, runc, debootstrap,
# redis-server, curl and Debian mirror + PyPI access:
#   apt-get install -y podman buildah debootstrap runc redis-server curl
#   timeout 900 bash scripts/image-smoke.sh
# WORK (default /tmp/cryptolens-image) keeps the base and podman's storage between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/tmp/cryptolens-image}
IMAGE=localhost/cryptolens:dev
for tool in podman runc debootstrap redis-server curl python3; do
  command -v "$tool" >/dev/null || { echo "image-smoke: needs $tool" >&2; exit 1; }
done
mkdir -p "$WORK"
# vfs and cgroupfs: work inside a container or VM without overlayfs or systemd.
podman() {
  command podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs \
    --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}
# Explicit limits: podman's defaults exceed the hard limits of a process without CAP_SYS_RESOURCE.
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

# 1. The base: Debian bookworm (Python 3.11) with a virtual environment at /usr/local, so `python`
#    and `pip` are on PATH as in the official python:3.11-slim image the Dockerfile names.
if ! podman image exists docker.io/library/python:3.11-slim; then
  if [ ! -f "$WORK/base.tar" ]; then
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
      http://deb.debian.org/debian >"$WORK/debootstrap.log"
    chroot "$WORK/rootfs" /usr/bin/python3 -m venv /usr/local
    # The host's trust store, for a network whose TLS is intercepted by a local CA.
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/rootfs/etc/pip.conf"
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK/rootfs" -cf "$WORK/base.tar" .
  fi
  podman import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$WORK/base.tar" docker.io/library/python:3.11-slim >/dev/null
fi

# 2. The image, from the repository's Dockerfile unchanged.
start=$(date +%s)
podman build --pull=never --network=host "${LIMITS[@]}" -t "$IMAGE" . >"$WORK/build.log" \
  || { tail -30 "$WORK/build.log" >&2; exit 1; }
echo "image-smoke: built $IMAGE in $(( $(date +%s) - start )) s"
podman image prune -f >/dev/null  # earlier builds' layers (vfs copies every layer in full)

# 3. Redis on loopback with a password; the services get its URL as a file (CRYPTOLENS_REDIS_URL_FILE).
read -r REDIS FETCH CORE ALERTS M1 M2 M3 UI < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
RUN=$(mktemp -d "$WORK/run-XXXX")
printf 'redis://:%s@127.0.0.1:%s/0\n' "$PASSWORD" "$REDIS" >"$RUN/redis-url"
chmod 0444 "$RUN/redis-url"
NAMES=(cl-fetch cl-core cl-alerts cl-ui)
cleanup() {
  for name in "${NAMES[@]}"; do podman rm -f -t 2 "$name" >/dev/null 2>&1 || true; done
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
printf 'requirepass %s\n' "$PASSWORD" | redis-server - --port "$REDIS" --bind 127.0.0.1 --save "" \
  --appendonly no >"$RUN/redis.log" 2>&1 &
REDIS_PID=$!

common=(--network=host --read-only --tmpfs /tmp "${LIMITS[@]}"
        -v "$RUN/redis-url:/etc/cryptolens-secrets/redis-url:ro"
        -e CRYPTOLENS_REDIS_URL_FILE=/etc/cryptolens-secrets/redis-url -e CRYPTOLENS_HOST=127.0.0.1
        -e CRYPTOLENS_FETCH_ADDR="127.0.0.1:$FETCH" -e CRYPTOLENS_CORE_ADDR="127.0.0.1:$CORE"
        -e CRYPTOLENS_ALERTS_ADDR="127.0.0.1:$ALERTS")
podman run -d --name cl-fetch "${common[@]}" -e CRYPTOLENS_PROVIDER=simulated \
  -e CRYPTOLENS_GRPC_PORT="$FETCH" -e CRYPTOLENS_METRICS_PORT="$M1" "$IMAGE" serve fetch >/dev/null
podman run -d --name cl-core "${common[@]}" -e CRYPTOLENS_GRPC_PORT="$CORE" -e CRYPTOLENS_METRICS_PORT="$M2" \
  "$IMAGE" serve core >/dev/null
podman run -d --name cl-alerts "${common[@]}" -e CRYPTOLENS_GRPC_PORT="$ALERTS" -e CRYPTOLENS_METRICS_PORT="$M3" \
  "$IMAGE" serve alerts >/dev/null
podman run -d --name cl-ui "${common[@]}" "$IMAGE" ui --port "$UI" --host 127.0.0.1 >/dev/null

# 4. Checks through the containers (bounded: each up to 60 s).
fail() { echo "image-smoke: FAILED: $*" >&2; for n in "${NAMES[@]}"; do echo "--- $n" >&2; podman logs --tail 20 "$n" >&2 || true; done; exit 1; }
retry() { for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
for pair in "fetch:$FETCH" "core:$CORE" "alerts:$ALERTS"; do
  retry podman exec "cl-${pair%%:*}" python -m services.healthcheck "127.0.0.1:${pair#*:}" || fail "${pair%%:*} health"
  podman exec "cl-${pair%%:*}" python -m services.healthcheck "127.0.0.1:${pair#*:}"
done
stats() {
  podman exec cl-core python -c "
import grpc, sys
from cryptolens.v1 import core_pb2, core_pb2_grpc
reply = core_pb2_grpc.CoreServiceStub(grpc.insecure_channel('127.0.0.1:$CORE')).GetStats(
    core_pb2.GetStatsRequest(symbol='BTC-USD', lookback='7d'), timeout=10)
print(f'GetStats {reply.symbol}: {reply.count} prices, last {reply.last:.2f}')
sys.exit(0 if reply.count > 0 else 1)"
}
retry stats || fail "GetStats"
stats
retry curl -fsS "http://127.0.0.1:$UI/_stcore/health" || fail "dashboard health"
echo "dashboard: $(curl -fsS "http://127.0.0.1:$UI/_stcore/health")"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image-smoke: OK; $IMAGE is $(( size / 1000000 )) MB (base $(( $(podman image inspect --format '{{.Size}}' docker.io/library/python:3.11-slim) / 1000000 )) MB)"
