"""`taskrouter-healthcheck`: exit 0 when the local service answers grpc.health.v1 with SERVING, 1
otherwise. The container HEALTHCHECK runs it; Kubernetes uses its native gRPC probe instead.

    taskrouter-healthcheck --port 50051 [--ca cert.pem] [--service taskrouter.v1.TaskRouter]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter-healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--service", default="", help="health service name; '' = the whole server")
    parser.add_argument("--ca", type=Path, help="PEM certificate to trust when the server serves TLS")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    target = f"{args.host}:{args.port}"
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(args.ca.read_bytes()))
        if args.ca is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{target}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
