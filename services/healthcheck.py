"""`python -m services.healthcheck HOST:PORT [SERVICE]`: exit 0 if the gRPC health check says SERVING.

Used by the Helm chart's probes when gRPC runs TLS (kubelet's native gRPC probe cannot) and by its
test pods (the image has no grpcurl); handy in shells. TLS comes from the same CRYPTOLENS_TLS_CA_FILE,
CRYPTOLENS_TLS_CLIENT_CERT_FILE / _KEY_FILE and CRYPTOLENS_TLS_SERVER_NAME the services use.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import ClientTLS, TLSError, channel


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m services.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    try:
        conn = channel(argv[0], ClientTLS.from_env())
    except TLSError as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 2
    with conn:
        try:
            reply = health_pb2_grpc.HealthStub(conn).Check(
                health_pb2.HealthCheckRequest(service=argv[1] if len(argv) > 1 else ""), timeout=5)
        except grpc.RpcError as exc:
            print(f"{argv[0]}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{argv[0]}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
