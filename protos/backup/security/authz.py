"""One server interceptor that authorizes every call, denying by default.

Each process gives the interceptor a table from service (or full method) name to who may
call it. A method that is not in the table, directly or through its service, is refused,
so a method added later is protected without anyone remembering to protect it; a new
method of a listed service gets that service's rule.

Credentials, checked in this order:
- the local socket (`transport_security_type` "local": a unix socket with grpc's local
  credentials; the socket file's 0600 mode is what admits the caller);
- a TLS client certificate from the trusted CA, whose OU names an allowed role;
- `authorization: Bearer TOKEN`, compared in constant time.
Refusals say UNAUTHENTICATED (no or wrong credential) or PERMISSION_DENIED (a valid
identity of the wrong role, or a method nobody may call) and nothing else.
"""

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .guard import Check, Guard, Handler, RateLimitedWarning
from .roles import Role, role_of

log = logging.getLogger("backup.security")

TOKEN_MIN_LENGTH = 16
REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: "authentication required",
    grpc.StatusCode.PERMISSION_DENIED: "permission denied",
}
# Open on both processes: health for probes and load balancers, reflection for grpcurl.
STANDARD_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

Context = grpc.aio.ServicerContext[Any, Any]
Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True)
class Access:
    """Who may call: certificate roles, the bearer token, the local socket, or anyone."""

    roles: frozenset[Role] = frozenset()
    token: bool = False
    local: bool = False
    anyone: bool = False


OPEN = Access(anyone=True)


def open_standard_services() -> dict[str, Access]:
    return dict.fromkeys(STANDARD_SERVICES, OPEN)


def load_token(path: Path) -> bytes:
    """The API token from its file (surrounding whitespace ignored); raises SystemExit."""
    try:
        token = path.read_bytes().strip()
    except OSError as error:
        raise SystemExit(f"--api-token-file {path}: {error.strerror}") from None
    if len(token) < TOKEN_MIN_LENGTH:
        raise SystemExit(
            f"--api-token-file {path}: the token must be at least {TOKEN_MIN_LENGTH} "
            "characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if path.stat().st_mode & 0o077:
        log.warning("--api-token-file %s is readable by other users: chmod 600 it", path)
    return token


def _digest(token: bytes) -> bytes:
    # Equal-length digests: compare_digest then leaks nothing, not even the length.
    return hashlib.sha256(token).digest()


if TYPE_CHECKING:  # grpc's classes are generic only in grpc-stubs
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor


class Authorizer(ServerInterceptor):
    """Authorizes every call against `rules` on its headers, before its message is read;
    `token` enables bearer-token credentials."""

    def __init__(
        self, rules: Mapping[str, Access], token: bytes | None = None, guard: Guard | None = None
    ) -> None:
        self._rules = dict(rules)
        self._token_digest = _digest(token) if token else None
        # Every method, open ones too, is parsed and bounded by the guard (see guard.py).
        self.guard = guard or Guard()
        self._guarded: dict[Handler, Handler] = {}
        self._refusals = RateLimitedWarning()  # one line per reason and interval

    def access_for(self, method: str) -> Access | None:
        """The rule for "/package.Service/Method": its own entry, else its service's."""
        service = method.lstrip("/").partition("/")[0]
        return self._rules.get(method, self._rules.get(service))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # By handler, not by method name: one authorizer may serve many servers (the fleet).
        guarded = self._guarded.get(handler)
        if guarded is None:
            method = handler_call_details.method
            access = self.access_for(method)
            check = None if access is not None and access.anyone else self._check(method, access)
            guarded = self._guarded[handler] = self.guard.wrap(handler, method, check)
        return guarded

    def _check(self, method: str, access: Access | None) -> Check:
        async def check(context: Context) -> None:
            refusal, why = self.refusal(
                access, context.auth_context(), context.invocation_metadata() or ()
            )
            if refusal is not None:
                self._refusals.warn("refused %s from %s: %s", method, context.peer(), why, kind=why)
                await context.abort(refusal, REFUSALS[refusal])

        return check

    def refusal(
        self,
        access: Access | None,
        auth_context: Mapping[str, Iterable[bytes]],
        metadata: Metadata,
    ) -> tuple[grpc.StatusCode | None, str]:
        """(None, why) when the caller may proceed, else (the status to refuse with, why)."""
        if access is None:
            return grpc.StatusCode.PERMISSION_DENIED, "method not in the allow table"
        if access.anyone:
            return None, "open"
        transport = b"".join(auth_context.get("transport_security_type", ()))
        if access.local and transport == b"local":
            return None, "local socket"
        role = None
        certificates = list(auth_context.get("x509_pem_cert", ()))
        if transport == b"ssl" and certificates:
            role = role_of(bytes(certificates[0]))
            if role in access.roles:
                return None, f"certificate of role {role}"
        presented = _bearer_token(metadata)
        if presented is not None:
            if (
                access.token
                and self._token_digest is not None
                and hmac.compare_digest(_digest(presented), self._token_digest)
            ):
                return None, "token"
            return grpc.StatusCode.UNAUTHENTICATED, "wrong token"
        if certificates:
            return grpc.StatusCode.PERMISSION_DENIED, f"certificate of role {role}"
        return grpc.StatusCode.UNAUTHENTICATED, "no credential"


def _bearer_token(metadata: Metadata) -> bytes | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.encode() if isinstance(value, str) else value
            scheme, _, token = text.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return None
