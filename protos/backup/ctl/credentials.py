"""How an operator's client reaches PolicyService: TLS material and the bearer token.

The building blocks of `backupctl`'s `--tls-ca/--tls-cert/--tls-key/--token-file`.
A token rides in `authorization: Bearer TOKEN` metadata on every call; grpc refuses call
credentials on a plaintext channel, so a client interceptor adds it in both modes.
"""

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from backup.serving import CLIENT_OPTIONS

_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def _check_authority(ca: Path) -> None:
    try:
        x509.load_pem_x509_certificates(ca.read_bytes())
    except ValueError:
        raise ValueError(f"--tls-ca {ca}: not a PEM certificate") from None


def _check_pair(cert: Path, key: Path) -> None:
    """The certificate is valid now and the key is its key."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        raise ValueError(f"--tls-cert {cert}: not a PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"--tls-key {key}: not an unencrypted PEM private key") from None
    if _public(private_key.public_key()) != _public(certificate.public_key()):
        raise ValueError(f"--tls-key {key} is not the key of --tls-cert {cert}")
    now = datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ValueError(
            f"--tls-cert {cert} is valid from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d}, not now"
        )


def _public(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


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
        """Reads and checks the files, so that bad material fails here in one line, not in
        grpc-core's handshake (which logs and reports only "Failed to create security
        handshaker"); raises ValueError, or OSError for a file that cannot be read."""
        if (cert is None) != (key is None):
            raise ValueError(
                "a client certificate needs its key, and the key its certificate "
                "(--tls-cert, --tls-key)"
            )
        if cert is not None and ca is None:
            raise ValueError(
                "a client certificate is only sent over TLS: give the CA too (--tls-ca)"
            )
        if ca is not None:
            _check_authority(ca)
        if cert is not None and key is not None:
            _check_pair(cert, key)
        token = token_file.read_text().strip() if token_file is not None else None
        if token is not None and not _PRINTABLE.fullmatch(token):
            # grpc would refuse such metadata mid-call.
            raise ValueError(f"--token-file {token_file}: not one line of printable ASCII")
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

    def blocking_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = CLIENT_OPTIONS
    ) -> grpc.Channel:
        """The same as `channel`, for grpc's blocking API (backupctl)."""
        credentials = self.channel_credentials()
        channel = (
            grpc.insecure_channel(address, options)
            if credentials is None
            else grpc.secure_channel(address, credentials, options)
        )
        if not self.token:
            return channel
        return grpc.intercept_channel(channel, _BlockingToken(self.metadata()))


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


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


if TYPE_CHECKING:  # grpc's classes are generic only in grpc-stubs
    UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    UnaryUnary = grpc.UnaryUnaryClientInterceptor
    UnaryStream = grpc.UnaryStreamClientInterceptor
    StreamUnary = grpc.StreamUnaryClientInterceptor
    StreamStream = grpc.StreamStreamClientInterceptor


class _BlockingToken(UnaryUnary, UnaryStream, StreamUnary, StreamStream):
    """Adds the bearer token to every call of a blocking channel, whatever its kind."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    intercept_unary_stream = intercept_unary_unary
    intercept_stream_stream = intercept_stream_unary
