"""Prometheus metrics both processes share: the /metrics endpoint and the gRPC call counters.

Each process makes its own registry (`new_registry`: the process and Python collectors),
registers its own families on it, and serves it with `MetricsEndpoint`. The endpoint
follows the process's security mode: with TLS material it is HTTPS with the process's own
certificate and answers only a client certificate of the operator role (Prometheus scrapes
with one); without, it is plain HTTP and, like the gRPC port, refuses a non-loopback
address unless `--insecure`. It runs on its own threads, so a scrape never waits for the
event loop and a slow scraper never holds it.
"""

import asyncio
import inspect
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .security import tls
from .security.roles import Role, role_of
from .security.tls import TlsFiles

log = logging.getLogger("backup.metrics")

METRICS_PATH = "/metrics"
# A scraper that connects and never completes its TLS handshake or request is dropped.
CONNECTION_TIMEOUT = 10.0


def new_registry() -> CollectorRegistry:
    """A registry of this process's own: CPU, memory, open files, Python's collector."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def add_arguments(parser: Any) -> None:
    """`--metrics-listen HOST:PORT`, the same on the server and the agent."""
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http(s)://HOST:PORT/metrics (default: off)",
    )


class _Handler(BaseHTTPRequestHandler):
    server: "_MetricsHttpServer"

    def setup(self) -> None:
        self.request.settimeout(CONNECTION_TIMEOUT)
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        refusal = self.server.refusal(self.connection)
        if refusal is not None:
            self.send_error(403, refusal)
            return
        if self.path.partition("?")[0] != METRICS_PATH:
            self.send_error(404, f"metrics are at {METRICS_PATH}")
            return
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes are not logged: one line per scrape would drown the process's own."""


class _MetricsHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, context: ssl.SSLContext | None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.tls = context is not None
        if context is not None:
            # The handshake happens on the connection's own thread, on first read, so a
            # client that never finishes it cannot hold up accepting the next scrape.
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def refusal(self, connection: socket.socket) -> str | None:
        """Why this connection may not read the metrics, or None when it may."""
        if not self.tls:
            return None
        assert isinstance(connection, ssl.SSLSocket)
        der = connection.getpeercert(binary_form=True)
        if der is None:
            return "a client certificate of the operator role is required"
        role = role_of(ssl.DER_cert_to_PEM_cert(der).encode())
        if role is not Role.OPERATOR:
            return f"a certificate of role {role} may not read metrics; operators may"
        return None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake or a dropped scraper is the scraper's problem, not a traceback.
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


def _tls_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class MetricsEndpoint:
    """/metrics on its own HTTP(S) listener; `port` is known once started."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        tls_files: TlsFiles | None = None,
        insecure: bool = False,
    ) -> None:
        self.registry = registry
        self.listen = listen
        self._tls_files = tls_files
        self._insecure = insecure
        self._server: _MetricsHttpServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.listen.rpartition(":")[0]
        scheme = "https" if self._tls_files else "http"
        return f"{scheme}://{host}:{self.port}{METRICS_PATH}"

    def start(self) -> None:
        """Binds and starts serving; raises SystemExit with one clear line when it cannot."""
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isascii() or not port.isdigit():
            raise SystemExit(f"--metrics-listen {self.listen}: expected HOST:PORT")
        if self._tls_files is None:
            tls.check_plaintext_listen(self.listen, self._insecure)
        try:
            context = _tls_context(self._tls_files) if self._tls_files else None
            self._server = _MetricsHttpServer((host.strip("[]"), int(port)), self.registry, context)
        except (OSError, ssl.SSLError) as error:
            raise SystemExit(f"cannot serve metrics on {self.listen}: {error}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        log.info(
            "metrics at %s (%s)",
            self.url,
            "operators' client certificates only" if self._tls_files else "plaintext",
        )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()


# --- gRPC calls by method and code, and their latency -------------------------------------

if TYPE_CHECKING:  # grpc's classes are generic only in grpc-stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    ServerInterceptor = grpc.aio.ServerInterceptor

Context = grpc.aio.ServicerContext[Any, Any]


class GrpcMetrics(ServerInterceptor):
    """Counts every call by service, method and status code, and times it.

    Only methods the server serves are counted, so a caller cannot invent label values.
    Put it first among the interceptors, so that refused calls are counted too.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started_total", "gRPC calls started.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "gRPC calls ended, by status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from a call's start to its status.",
            labels,
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        self.started.labels(service, method).inc()
        started = time.perf_counter()

        def observe(context: Context, error: BaseException | None) -> None:
            code = _code_of(context, error)
            self.handled.labels(service, method, code).inc()
            self.seconds.labels(service, method).observe(time.perf_counter() - started)

        return _measured(handler, observe)


def _code_of(context: Context, error: BaseException | None) -> str:
    """The status the call ended with: set by abort or set_code, else from how it ended."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    # A cancelled call (the client went away) raises CancelledError in the handler.
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


Done = Callable[[Context, BaseException | None], None]


def _measured(handler: Handler, done: Done) -> Handler:
    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    for kind, make in kinds.items():
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        wrapped = (
            _stream_measured(behaviour, done)
            if handler.response_streaming
            else _unary_measured(behaviour, done)
        )
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise AssertionError(f"a method handler with no behaviour: {handler!r}")


def _unary_measured(behaviour: Callable[..., Any], done: Done) -> Callable[..., Awaitable[Any]]:
    async def measured(request: Any, context: Context) -> Any:
        try:
            reply = behaviour(request, context)
            reply = await reply if inspect.isawaitable(reply) else reply
        except BaseException as error:
            done(context, error)
            raise
        done(context, None)
        return reply

    return measured


def _stream_measured(
    behaviour: Callable[..., Any], done: Done
) -> Callable[..., AsyncIterator[Any]]:
    async def measured(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            replies = behaviour(request, context)
            if inspect.isasyncgen(replies):
                async for reply in replies:
                    yield reply
            elif inspect.isawaitable(replies):
                await replies  # a handler that writes with context.write()
            else:
                for reply in replies:
                    yield reply
        except BaseException as error:
            done(context, error)
            raise
        done(context, None)

    return measured


def enum_labels(enum: Any) -> dict[int, str]:
    """Label values of a proto enum: its values' lower-case suffixes (DELIVERY_NOT_RECEIVED
    is "not_received"), by number."""
    prefix = "".join(
        f"_{char}" if char.isupper() and position else char
        for position, char in enumerate(enum.DESCRIPTOR.name)
    ).upper()
    return {
        value.number: value.name.removeprefix(f"{prefix}_").lower()
        for value in enum.DESCRIPTOR.values
    }
