"""A gRPC server with grpcio's stock health servicer, the one Dagster's code servers use.

    python health_server.py [SERVICE=STATUS ...]

Listens on 127.0.0.1 (a port the system picks), sets each SERVICE to STATUS (a
ServingStatus name: SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN; an empty SERVICE is
the whole server, SERVING unless set), prints the port on one line, and serves until
killed. Compressed answers on, as Dagster's server has them.
"""

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), compression=grpc.Compression.Gzip
    )
    servicer = health.HealthServicer()
    for pair in sys.argv[1:]:
        service, status = pair.split("=", 1)
        servicer.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
