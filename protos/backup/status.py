"""The one table from domain errors to gRPC status codes, and the rich status it sends.

INVALID_ARGUMENT (and any error that names a field) carries a google.rpc.BadRequest
field violation in the status details, so every client can show which field is wrong.
"""

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import (  # noqa: F401 - what a status may carry
    MESSAGE_MAX,
    AlreadyExists,
    BackupError,
    FailedPrecondition,
    Fenced,
    InvalidArgument,
    LocalFault,
    NotFound,
    ResourceExhausted,
    Unavailable,
    bounded,
)

STATUS_OF_ERROR: dict[type[BackupError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    LocalFault: grpc.StatusCode.INTERNAL,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    # Another replica has the work now: the client retries (with the same session_id).
    Fenced: grpc.StatusCode.UNAVAILABLE,
}


def rich_status(code: grpc.StatusCode, message: str, field: str = "") -> grpc.Status:
    """A status whose details name the offending field, when there is one; bounded in size."""
    message = bounded(message)
    field = bounded(field, 200)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=message.removeprefix(f"{field}: ")
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: BackupError) -> NoReturn:
    status = rich_status(STATUS_OF_ERROR[type(error)], error.message, error.field)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # abort always raises


Request = TypeVar("Request")
Reply = TypeVar("Reply")
Servicer = TypeVar("Servicer")

Unary = Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Reply]]
Streaming = Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Reply]]


def unary(method: Unary[Servicer, Request, Reply]) -> Unary[Servicer, Request, Reply]:
    """Turns the domain's errors into their status for a unary RPC."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Reply:
        try:
            return await method(self, request, context)
        except BackupError as error:
            await abort(context, error)

    return wrapper


def streaming(method: Streaming[Servicer, Request, Reply]) -> Streaming[Servicer, Request, Reply]:
    """Turns the domain's errors into their status for a server-streaming RPC."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Reply]:
        try:
            async for reply in method(self, request, context):
                yield reply
        except BackupError as error:
            await abort(context, error)

    return wrapper
