"""How an operator's client reaches PolicyService: TLS material and the bearer token.

The building blocks of `backupctl`'s `--tls-ca/--tls-cert/--tls-key/--token-file`.
A token rides in `authorization: Bearer TOKEN` metadata on every call; grpc refuses call
credentials on a plaintext channel, so a client interceptor adds it in both modes.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from backup_server.serving import CLIENT_OPTIONS


@dataclass(frozen=True)
class OperatorCredentials:
    """Any of: the CA to trust (TLS), an operator certificate and key, the API token."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    @classmethod
    def from_files(
        cls,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        token_file: Path | None = None,
    ) -> "OperatorCredentials":
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key, and the key its certificate")
        if cert is not None and ca is None:
            raise ValueError("a client certificate is only sent over TLS: give the CA too")
        token = token_file.read_text().strip() if token_file is not None else None
        return cls(ca, cert, key, token)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(),
            self.key.read_bytes() if self.key else None,
            self.cert.read_bytes() if self.cert else None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(
        self, address: str, options: Sequence[tuple[str, Any]] = CLIENT_OPTIONS
    ) -> grpc.aio.Channel:
        """An aio channel to the server that sends these credentials on every call."""
        interceptors = _token_interceptors(self.metadata()) if self.token else None
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(address, options, interceptors=interceptors)
        return grpc.aio.secure_channel(address, credentials, options, interceptors=interceptors)


def _token_interceptors(metadata: tuple[tuple[str, str], ...]) -> list[Any]:
    """One interceptor per call kind: grpc.aio files each interceptor under one kind only."""

    def with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        merged = grpc.aio.Metadata(*(details.metadata or ()), *metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, merged, details.credentials, details.wait_for_ready
        )

    async def forward(self: object, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(with_token(details), request)

    kinds = (
        (grpc.aio.UnaryUnaryClientInterceptor, "intercept_unary_unary"),
        (grpc.aio.UnaryStreamClientInterceptor, "intercept_unary_stream"),
        (grpc.aio.StreamUnaryClientInterceptor, "intercept_stream_unary"),
        (grpc.aio.StreamStreamClientInterceptor, "intercept_stream_stream"),
    )
    return [type(f"Token{method}", (kind,), {method: forward})() for kind, method in kinds]
