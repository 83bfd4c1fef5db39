"""The order every call runs in: credentials, message, parse, slot, then the method.

grpc's own order is the wrong way round for a service facing untrusted peers: it takes a
concurrency slot, waits for the request message and parses it before any interceptor's
code runs, so a peer without credentials could fill the slots with calls that never send
their message, and bytes that do not parse came back as UNKNOWN with a traceback in the
log. Here every method is registered with an identity deserializer and as a
client-streaming method (the same frames on the wire), and its guard does, in order:

1. authorize on the headers alone (UNAUTHENTICATED or PERMISSION_DENIED);
2. wait a bounded time for the request message (DEADLINE_EXCEEDED past it);
3. parse it (INVALID_ARGUMENT, logged as one rate-limited WARNING line);
4. take a slot (RESOURCE_EXHAUSTED when none is free; some kept for the commands);
5. run the method.
"""

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("backup.security")

# A client sends its message with its headers; this only ever waits on a slow network.
MESSAGE_WAIT_SECONDS = 10.0
# One line per interval about requests that do not parse, however many arrive.
UNPARSABLE_LOG_INTERVAL_SECONDS = 10.0

Context = grpc.aio.ServicerContext[Any, Any]
Check = Callable[[Context], Awaitable[None]]
if TYPE_CHECKING:  # grpc's classes are generic only in grpc-stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class Slots:
    """At most `limit` calls at once; the last `reserve` only for the `reserved_for` methods.

    What the backup server sends an agent (StartJob, StopJob) keeps its slots even when
    reads and watches hold all the others.
    """

    def __init__(
        self, limit: int, reserved_for: frozenset[str] = frozenset(), reserve: int = 0
    ) -> None:
        if limit < 1 or not 0 <= reserve < limit:
            raise ValueError(f"slots: limit {limit} and reserve {reserve} do not fit")
        self.limit = limit
        self.reserve = reserve
        self.reserved_for = reserved_for
        self.busy = 0

    def take(self, method: str) -> bool:
        ceiling = self.limit if method in self.reserved_for else self.limit - self.reserve
        if self.busy >= ceiling:
            return False
        self.busy += 1
        return True

    def give_back(self) -> None:
        self.busy -= 1


class RateLimitedWarning:
    """Logs the first occurrence of each kind, then at most one line per interval with the
    count: a peer that repeats a mistake (or an attack) cannot flood the log."""

    def __init__(self, interval: float = UNPARSABLE_LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, message: str, *args: object, kind: str = "") -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -float("inf")) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" (and {suppressed} more since the last such line)"
        log.warning(message, *args)
        self._last[kind] = now


class Guard:
    """Wraps method handlers so that they run in the order of the module docstring."""

    def __init__(
        self, slots: Slots | None = None, message_wait: float = MESSAGE_WAIT_SECONDS
    ) -> None:
        self.slots = slots
        self.message_wait = message_wait
        self.unparsable = RateLimitedWarning()

    def wrap(self, handler: Handler, method: str, check: Check | None) -> Handler:
        """The handler with identity deserialization and the guard in front of it."""
        behaviour = next(
            getattr(handler, kind)
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if getattr(handler, kind) is not None
        )
        call = _Call(self, method, check, handler.request_deserializer or (lambda raw: raw))
        # Reading the message ourselves (registering a unary method as client-streaming) is
        # what lets credentials and slots come first; with neither, grpc's own unary path
        # is cheaper and parsing inside still turns bad bytes into INVALID_ARGUMENT.
        if handler.request_streaming:
            mode = _STREAMED
        elif check is None and self.slots is None:
            mode = _GIVEN
        else:
            mode = _READ
        if mode == _GIVEN and self.slots is None and not handler.response_streaming:
            # The common unguarded unary call (a plaintext server, the fleet simulator):
            # no more than the parse in front of the method.
            parse = call.parse

            async def plain(raw: bytes, context: Context) -> Any:
                try:
                    request = parse(raw)
                except (DecodeError, ValueError, RecursionError):
                    request = await call.refuse_unparsable(raw, context)
                outcome = behaviour(request, context)
                return await outcome if inspect.isawaitable(outcome) else outcome

            return grpc.unary_unary_rpc_method_handler(
                plain, response_serializer=handler.response_serializer
            )
        if handler.response_streaming:

            async def replies(requests: Any, context: Context) -> Any:
                request = await call.request(requests, context, mode)
                async with call.slot(context):
                    outcome = behaviour(request, context)
                    if inspect.isasyncgen(outcome):
                        async for reply in outcome:
                            yield reply
                    elif inspect.isawaitable(outcome):
                        await outcome  # a handler that writes with context.write()
                    else:
                        for reply in outcome:
                            yield reply

            make = (
                grpc.unary_stream_rpc_method_handler
                if mode == _GIVEN
                else grpc.stream_stream_rpc_method_handler
            )
            return make(replies, response_serializer=handler.response_serializer)

        async def reply(requests: Any, context: Context) -> Any:
            request = await call.request(requests, context, mode)
            async with call.slot(context):
                outcome = behaviour(request, context)
                return await outcome if inspect.isawaitable(outcome) else outcome

        make = (
            grpc.unary_unary_rpc_method_handler
            if mode == _GIVEN
            else grpc.stream_unary_rpc_method_handler
        )
        return make(reply, response_serializer=handler.response_serializer)


# How a guarded method gets its request: grpc read it (unary, nothing to put first), the
# guard reads it once the caller is admitted, or it is a stream parsed message by message.
_GIVEN, _READ, _STREAMED = "given", "read", "streamed"


class _Call:
    """What one method's guard knows: its name, its check and how to parse its request."""

    def __init__(
        self, guard: Guard, method: str, check: Check | None, parse: Callable[[bytes], Any]
    ) -> None:
        self.guard = guard
        self.method = method
        self.check = check
        self.parse = parse

    async def request(self, requests: Any, context: Context, mode: str) -> Any:
        """The parsed request (or, for client streaming, the parsed stream) once admitted."""
        if mode == _GIVEN:
            return await self._parsed(requests, context)
        if self.check is not None:
            await self.check(context)
        if mode == _STREAMED:
            return self._parsed_stream(requests, context)
        try:
            async with asyncio.timeout(self.guard.message_wait):  # no task, unlike wait_for
                raw = await context.read()
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request message did not arrive within {self.guard.message_wait:g} s",
            )
        if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carries no request")
        return await self._parsed(raw, context)

    async def _parsed_stream(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[Any]:
        async for raw in requests:
            yield await self._parsed(raw, context)

    async def _parsed(self, raw: bytes, context: Context) -> Any:
        try:
            return self.parse(raw)
        except (DecodeError, ValueError, RecursionError):
            return await self.refuse_unparsable(raw, context)

    async def refuse_unparsable(self, raw: bytes, context: Context) -> Any:
        """Ends the call INVALID_ARGUMENT, with one rate-limited line in the log."""
        self.guard.unparsable.warn(
            "refused %s from %s: the request (%d bytes) does not parse",
            self.method,
            context.peer(),
            len(raw),
        )
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "the request does not parse as its message type"
        )

    @contextlib.asynccontextmanager
    async def slot(self, context: Context) -> AsyncIterator[None]:
        """Holds one of the slots while the method runs (streams included)."""
        slots = self.guard.slots
        if slots is None:
            yield
            return
        if not slots.take(self.method):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"busy: {slots.busy} calls in progress, try again shortly",
            )
        try:
            yield
        finally:
            slots.give_back()
