"""What both processes share: standard services, logging, and running until SIGTERM."""

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from . import logs, reflection

log = logging.getLogger("backup_server.serving")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
)


class SessionIdFilter(logging.Filter):
    """Gives every record a session_id (empty where there is none) for the format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session_id"):
            record.session_id = ""
        return True


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(logs.formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)


async def add_standard_services(
    server: grpc.aio.Server, service_names: Iterable[str]
) -> HealthServicer:
    """Health (NOT_SERVING until `mark_serving`) and reflection for the given services."""
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = list(service_names)
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    return health


async def mark_serving(health: HealthServicer, service_names: Iterable[str]) -> None:
    for name in ["", *service_names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)


def bind(server: grpc.aio.Server, address: str) -> int:
    """Listens on `address`; returns the port (useful with port 0). Fails clearly if taken."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise SystemExit(f"cannot listen on {address}: {error}") from None
    if port == 0:
        raise SystemExit(f"cannot listen on {address}: address in use or not available")
    return port


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Starts, waits for SIGTERM or SIGINT, then stops."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await start()
    await stopping.wait()
    log.info("signal received: shutting down")
    await stop()
