"""What both processes share: standard services, logging, and running until SIGTERM."""

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as _AioHealthServicer

from . import logs, reflection

log = logging.getLogger("backup.serving")

# Set explicitly on every server and client: a finished 10,000-computer session with
# long names, addresses and details is under 10 MiB (tests/test_hardening.py).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Keepalive, both sides in one place so they stay compatible: a client that pings more
# often than the server permits is sent GOAWAY (too_many_pings) and loses its connection.
# Clients ping idle connections so that a session never waits on a connection that died
# quietly (a NAT or firewall dropped it); servers ping to shed clients that vanished.
PERMITTED_PING_INTERVAL_MS = 60_000
CLIENT_PING_INTERVAL_MS = 120_000
SERVER_KEEPALIVE = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", PERMITTED_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 2),
)
CLIENT_KEEPALIVE = (
    ("grpc.keepalive_time_ms", CLIENT_PING_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
# A connection that has not finished its TLS handshake and HTTP/2 preface by then is
# closed, in plaintext too (grpc's default is 120 s): silent connections cost nothing long.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Connections at once on an agent or a server; past it grpc refuses new ones until some
# close. grpc has no cap per peer: the handshake timeout is what keeps one peer's silent
# connections short-lived. Left out of SERVER_OPTIONS, which the fleet simulator's
# thousands of servers in one process use: with it there, tests/test_scale.py's 2,000
# computers missed their deadline more often on a loaded machine.
MAX_CONNECTIONS = 4096


def server_options(
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS, max_connections: int | None = None
) -> tuple[tuple[str, int], ...]:
    """Every server's grpc options; the real processes add the connection cap."""
    cap = (
        ()
        if max_connections is None
        else (("grpc.max_allowed_incoming_connections", max_connections),)
    )
    return (
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.server_handshake_timeout_ms", int(handshake_timeout * 1000)),
        *cap,
        *SERVER_KEEPALIVE,
    )


SERVER_OPTIONS = server_options()
CLIENT_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    *CLIENT_KEEPALIVE,
)


# Young collections every 20,000 net allocations instead of 700, full ones rarely.
GC_THRESHOLDS = (20_000, 50, 20)


def tune_garbage_collector() -> None:
    """Keeps the cyclic garbage collector from stalling a fan-out; call once started.

    Profiled at 5,000 computers: with the default thresholds a full collection (about
    190 ms each, walking every call in flight) ran twice per session, 30% of the event
    loop's time, and pushed live computers past their deadline. What exists once the
    process has started lives as long as it does, so it is frozen out of collections.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HealthServicer(_AioHealthServicer):  # type: ignore[misc]
    """grpcio's aio health servicer, plus List (which it leaves unimplemented)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
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


def bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Listens on `address`; returns the port (useful with port 0). Fails clearly if taken."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
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
