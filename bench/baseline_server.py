"""A bare grpcio server with one empty unary method: the ceiling the real server is held against.

It is built like services.rpc.server.create_server (sync server, thread pool of the same size,
same channel options, same mTLS credentials, health service) minus everything realname adds:
no interceptor, no servicer logic, no database. Run as ``python -m bench.baseline_server``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.common import BASELINE_SERVICE
from services.rpc.server import MAX_MESSAGE_BYTES, MAX_METADATA_BYTES, TlsFiles
from services.runtime.config import Settings

_EMPTY = empty_pb2.Empty()


def _empty(_request: empty_pb2.Empty, _context: grpc.ServicerContext) -> empty_pb2.Empty:
    return _EMPTY


def serve(address: str, pki_dir: Path, max_workers: int) -> None:
    """Serves the empty method with mTLS on ``address`` until SIGTERM or SIGINT."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 64,
    )
    handler = grpc.method_handlers_generic_handler(
        BASELINE_SERVICE,
        {
            "Empty": grpc.unary_unary_rpc_method_handler(
                _empty,
                request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_secure_port(address, TlsFiles.in_pki_dir(pki_dir).credentials()) == 0:
        raise OSError(f"could not bind {address}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"baseline server on {address}", flush=True)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(5).wait()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--pki-dir", type=Path, required=True)
    # Same default pool as `realname serve`, so both servers schedule calls alike.
    parser.add_argument("--max-workers", type=int, default=Settings(Path()).max_workers)
    args = parser.parse_args()
    serve(args.address, args.pki_dir, args.max_workers)


if __name__ == "__main__":
    main()
