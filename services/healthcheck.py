"""`python -m services.healthcheck HOST:PORT [SERVICE]`: exit 0 if the gRPC health check says SERVING.

Used by the Helm chart's test pods (the image has no grpcurl) and handy in shells.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m services.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    with grpc.insecure_channel(argv[0]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=argv[1] if len(argv) > 1 else ""), timeout=5)
        except grpc.RpcError as exc:
            print(f"{argv[0]}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{argv[0]}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
