"""How backupctl reaches the server and agents, and how their errors read: one line each."""

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click
import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from backup import defaults, validation
from backup.ctl.contexts import Config, ConfigError
from backup.ctl.credentials import OperatorCredentials
from backup.errors import InvalidArgument
from backup.security.roles import Role, role_of
from backup.security.tls import handshake_failure
from backup.serving import CLIENT_OPTIONS
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2_grpc as api_grpc

DEFAULT_SERVER = defaults.SERVER_ADDRESS
AGENT_SERVICE = "backup.v1.AgentControl"
PROBE_SECONDS = 2.0
OUTPUTS = ("text", "wide", "json", "yaml")
LOCAL_SOCKET = "unix:"


class Failure(click.ClickException):
    """An error shown as one line on stderr, `backupctl: ...`; the exit code is 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"backupctl: {self.message}", err=True)


@dataclass
class Settings:
    """What every command needs to know, from the root's or its own options."""

    server: str = DEFAULT_SERVER
    output: str = "text"
    timeout: float = 30.0
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    context: str | None = None
    # The settings given by a flag or a BACKUP_* variable: a context does not override them.
    given: set[str] = field(default_factory=set)
    resolved: bool = False

    def resolve(self) -> "Settings":
        """Fills what was not given from the context (--context, else the current one)."""
        if self.resolved:
            return self
        self.resolved = True
        try:
            config = Config.load()
            name = self.context or config.current
            values = config.context(name) if name else {}
        except ConfigError as error:
            raise Failure(str(error)) from None
        for key, value in values.items():
            attribute = key.replace("-", "_")
            if attribute in self.given:
                continue
            if attribute == "server":
                try:
                    validation.check_address(f"context {name} server", value)
                except InvalidArgument as error:
                    raise Failure(f"{config.path}: {error.problem}") from None
                self.server = value
            else:
                setattr(self, attribute, Path(value))
        return self

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def structured(self) -> bool:
        """-o json or -o yaml: one document, no tables."""
        return self.output in ("json", "yaml")

    @property
    def wide(self) -> bool:
        """-o wide: tables show every column in full."""
        return self.output == "wide"

    def credentials(self) -> OperatorCredentials:
        """What every call to the server presents; a half pair or a bad token file fails."""
        try:
            return OperatorCredentials.from_files(
                self.tls_ca, self.tls_cert, self.tls_key, self.token_file
            )
        except ValueError as error:
            raise Failure(str(error)) from None
        except OSError as error:
            raise Failure(f"{error.filename}: {error.strerror}") from None


@dataclass(frozen=True)
class Peer:
    """Who a command talks to, and with what, so that a refusal can say what to change."""

    description: str  # "the backup server at HOST:PORT"
    noun: str  # "server" or "agent", as TLS reasons name it
    credentials: OperatorCredentials


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


def describe(error: grpc.RpcError, peer: Peer) -> str:
    """`CODE: message (field: ...)`, on one line, with what a refusal means for this call."""
    code: grpc.StatusCode = error.code()
    message = " ".join(str(error.details() or "").split())
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach {peer.description}: {_unreachable(message, peer)}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{peer.description} did not answer in time: {message}"
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        message = f"{message}: {_refused(code, peer)}"
    line = f"{code.name}: {message}"
    fields = field_violations(error)
    if fields:
        line += f" (field: {', '.join(fields)})"
    return line


def _unreachable(message: str, peer: Peer) -> str:
    """grpc's message, or what a failed TLS handshake means and which option to look at."""
    tls = peer.credentials.ca is not None
    reason = handshake_failure(message, peer.noun) if tls else None
    if reason is None:
        if not message.endswith("Socket closed"):
            return message
        # Under TLS 1.3 a refused client certificate only shows as the socket closing.
        if not tls:
            hint = "if it serves TLS, give --tls-ca and a credential"
        elif peer.credentials.cert is not None:
            hint = "under TLS: it may have refused the --tls-cert certificate"
        else:
            hint = "under TLS: it may require a client certificate, --tls-cert and --tls-key"
        return f"{message} ({hint})"
    hints = {
        "did not verify": "is --tls-ca the CA that issued it?",
        "not issued for this address": "give the host its certificate names",
        "does not speak TLS": "give no --tls-ca to reach a development-mode one",
    }
    for problem, hint in hints.items():
        if problem in reason:
            return f"TLS: {reason}; {hint}"
    return f"TLS: {reason}"


def _refused(code: grpc.StatusCode, peer: Peer) -> str:
    """What the refusal means, from what this call presented (the peer says nothing more)."""
    credentials = peer.credentials
    if peer.noun == "agent":
        return (
            f"{peer.description} takes commands only from the backup server's certificate; "
            "on its computer, ask its local socket: backupctl jobs unix:DATA_DIR/agent.sock"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED and credentials.token:
        return f"{peer.description} did not accept the token in --token-file"
    if code == grpc.StatusCode.UNAUTHENTICATED and credentials.cert is not None:
        # grpcio cannot ask for a client certificate without requiring one.
        return (
            f"{peer.description} asked for no certificate: with --api-token-file it "
            "takes the API token instead (--token-file)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED and credentials.cert is not None:
        role = role_of(credentials.cert.read_bytes())
        named = f"of role {role.value}" if role else "of no role of this project"
        return (
            f"{peer.description} takes only an operator's certificate "
            f"({Role.OPERATOR.value}); --tls-cert is {named}"
        )
    return (
        f"{peer.description} needs an operator's certificate (--tls-ca, --tls-cert, "
        "--tls-key) or the API token (--token-file)"
    )


class CallFailed(Failure):
    """A gRPC error, shown as one line on stderr; the exit code is 1."""

    def __init__(self, error: grpc.RpcError, peer: Peer) -> None:
        super().__init__(describe(error, peer))


def server_channel(settings: Settings) -> grpc.Channel:
    """A channel to the server presenting the settings' TLS material and token."""
    return settings.credentials().blocking_channel(settings.server)


@contextmanager
def backup_server(settings: Settings) -> Iterator[api_grpc.PolicyServiceStub]:
    """A PolicyService stub for the call(s) of one command; errors become one line."""
    peer = Peer(f"the backup server at {settings.server}", "server", settings.credentials())
    with peer.credentials.blocking_channel(settings.server) as channel, _one_line(peer):
        try:
            yield api_grpc.PolicyServiceStub(channel)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED and _is_agent(channel):
                raise Failure(
                    f"{settings.server} is a backup agent (it serves AgentControl), not the "
                    f"backup server: give --server the server's address (default {DEFAULT_SERVER})"
                ) from None
            raise


def _is_agent(channel: grpc.Channel) -> bool:
    """Whether the peer's health service knows the agent's service: a wrong --server."""
    request = health_pb2.HealthCheckRequest(service=AGENT_SERVICE)
    try:
        health_pb2_grpc.HealthStub(channel).Check(request, timeout=PROBE_SECONDS)
    except grpc.RpcError:
        return False
    return True


@contextmanager
def agent(address: str, settings: Settings) -> Iterator[agent_grpc.AgentControlStub]:
    """An AgentControl stub for the agent at HOST:PORT, or at unix:PATH, its local socket.

    Over TCP the settings' TLS material is presented, never the API token: it is the
    server's secret, and an agent has no use for it. The local socket needs none: its
    0600 mode admits the agent's own user.
    """
    if address.startswith(LOCAL_SOCKET):
        credentials = OperatorCredentials()
        local = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
        channel = grpc.secure_channel(address, local, CLIENT_OPTIONS)
    else:
        credentials = dataclasses.replace(settings.credentials(), token=None)
        channel = credentials.blocking_channel(address)
    peer = Peer(f"the agent at {address}", "agent", credentials)
    with channel, _one_line(peer):
        yield agent_grpc.AgentControlStub(channel)


@contextmanager
def _one_line(peer: Peer) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise CallFailed(error, peer) from None
