"""How backupctl reaches the server and agents, and how their errors read: one line each."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import click
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2_grpc as api_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
OUTPUTS = ("text", "json")


@dataclass
class Settings:
    """What every command needs to know, from the root's or its own options."""

    server: str = DEFAULT_SERVER
    output: str = "text"
    timeout: float = 30.0

    @property
    def json(self) -> bool:
        return self.output == "json"


def field_violations(error: grpc.RpcError) -> list[str]:
    """The fields a google.rpc.BadRequest in the error's status details names."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that contradict the code or message: show none
        return []
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def describe(error: grpc.RpcError, peer: str) -> str:
    """`CODE: message (field: ...)`, on one line; `peer` names who did not answer."""
    code: grpc.StatusCode = error.code()
    message = " ".join(str(error.details() or "").split())
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach {peer}: {message}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{peer} did not answer in time: {message}"
    line = f"{code.name}: {message}"
    fields = field_violations(error)
    if fields:
        line += f" (field: {', '.join(fields)})"
    return line


class CallFailed(click.ClickException):
    """A gRPC error, shown as one line on stderr; the exit code is 1."""

    def __init__(self, error: grpc.RpcError, peer: str) -> None:
        super().__init__(describe(error, peer))

    def show(self, file: object = None) -> None:
        click.echo(f"backupctl: {self.message}", err=True)


@contextmanager
def backup_server(settings: Settings) -> Iterator[api_grpc.PolicyServiceStub]:
    """A PolicyService stub for the call(s) of one command; errors become one line."""
    with (
        grpc.insecure_channel(settings.server) as channel,
        _one_line(f"the backup server at {settings.server}"),
    ):
        yield api_grpc.PolicyServiceStub(channel)


@contextmanager
def agent(address: str) -> Iterator[agent_grpc.AgentControlStub]:
    """An AgentControl stub for the agent at `address`."""
    with grpc.insecure_channel(address) as channel, _one_line(f"the agent at {address}"):
        yield agent_grpc.AgentControlStub(channel)


@contextmanager
def _one_line(peer: str) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise CallFailed(error, peer) from None
