"""The test PKI and helpers to call every method of a service with some credential."""

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from backup.ctl import pki as certs
from backup.ctl.credentials import OperatorCredentials
from backup.ctl.pki import Issued, Role
from backup.security.tls import TlsFiles
from backup.v1 import agent_control_pb2, policy_service_pb2

POLICY_SERVICE = policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"]
AGENT_CONTROL = agent_control_pb2.DESCRIPTOR.services_by_name["AgentControl"]
TOKEN = "t0ken-for-tests-only-0123456789abcdef"
CALL_DEADLINE = 5.0
# What an authorization failure looks like: refused by the interceptor, or no handshake.
AUTH_REFUSALS = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
    }
)


@dataclass
class Pki:
    """A CA made by `certs.init`, an agent certificate, and the bad certificates tests need."""

    root: Path
    other: Path  # a second, untrusted CA's directory, laid out the same way
    expired: dict[Role, Issued] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def issued(self, stem: str, directory: Path | None = None) -> Issued:
        base = directory or self.root
        return Issued(base / f"{stem}.pem", base / f"{stem}.key")

    def agent(self, name: str = "agent") -> Issued:
        return self.issued(f"agents/{name}")

    def tls(self, pair: Issued, ca: Path | None = None) -> TlsFiles:
        return TlsFiles(pair.cert, pair.key, ca or self.ca)

    def client(
        self, pair: Issued | None = None, token: str | None = None, ca: Path | None = None
    ) -> OperatorCredentials:
        """A TLS client trusting our CA (or `ca`), presenting `pair` if given, sending `token`."""
        return OperatorCredentials(
            ca=ca or self.ca,
            cert=pair.cert if pair else None,
            key=pair.key if pair else None,
            token=token,
        )


def make_pki(directory: Path) -> Pki:
    """Our CA (server, operator, agents for 127.0.0.1 and for another host), another CA, expired pairs."""
    root, other = directory / "pki", directory / "other"
    certs.init(root, "127.0.0.1:50051")
    certs.issue_agent(root, "agent", "127.0.0.1:50061")
    certs.issue_agent(root, "elsewhere", "192.0.2.7:50061")
    certs.init(other, "127.0.0.1:50051")
    certs.issue_agent(other, "agent", "127.0.0.1:50061")
    pki = Pki(root, other)
    authority = certs.load_authority(root)
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    for role in (Role.SERVER, Role.OPERATOR):
        certificate, key = certs.sign(
            authority,
            role,
            f"expired-{role.value}",
            ["127.0.0.1"],
            not_before=long_ago,
            not_after=long_ago + datetime.timedelta(days=30),
        )
        stem = root / f"expired-{role.value}"
        pki.expired[role] = certs.write_pair(
            stem.with_suffix(".pem"), stem.with_suffix(".key"), certificate, key
        )
    return pki


def methods(service: ServiceDescriptor) -> list[MethodDescriptor]:
    """Every method of the service as generated, so a method added later is covered too."""
    return list(service.methods)


def _identity(data: bytes) -> bytes:
    return data


async def call_method(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    metadata: Iterable[tuple[str, str]] = (),
    payload: bytes = b"",
) -> grpc.StatusCode:
    """Calls `method` with `payload` (an empty request by default); returns the status (OK after a first reply)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = tuple(metadata)
    try:
        if method.client_streaming:
            requests = iter([payload])
            if method.server_streaming:
                async for _ in channel.stream_stream(path, _identity, _identity)(
                    requests, timeout=CALL_DEADLINE, metadata=metadata
                ):
                    break
            else:
                await channel.stream_unary(path, _identity, _identity)(
                    requests, timeout=CALL_DEADLINE, metadata=metadata
                )
        elif method.server_streaming:
            stream = channel.unary_stream(path, _identity, _identity)(
                payload, timeout=CALL_DEADLINE, metadata=metadata
            )
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path, _identity, _identity)(
                payload, timeout=CALL_DEADLINE, metadata=metadata
            )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def codes_of_every_method(
    channel: grpc.aio.Channel,
    service: ServiceDescriptor,
    metadata: Iterable[tuple[str, str]] = (),
    payload: bytes = b"",
) -> dict[str, grpc.StatusCode]:
    return {
        method.name: await call_method(channel, method, metadata, payload)
        for method in methods(service)
    }
