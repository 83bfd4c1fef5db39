"""TLS material from files, grpc credentials made from it, and when plaintext is allowed.

Both processes take `--tls-cert FILE --tls-key FILE --tls-ca FILE`. With them they serve
over TLS (the agent requires a client certificate from that CA; the server uses its own
pair as its client identity toward agents). Without them they run in development mode:
plaintext, and only on a loopback address unless `--insecure` says otherwise.
"""

import argparse
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from .roles import Role, role_of

log = logging.getLogger("backup.security")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class TlsMaterial:
    """A process's own certificate and key, and the CA it trusts, read once at start-up."""

    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes

    @classmethod
    def load(cls, files: TlsFiles, role: Role) -> "TlsMaterial":
        """Reads the files; refuses a certificate issued for another role."""
        contents = {}
        for flag, path in (
            ("--tls-cert", files.cert),
            ("--tls-key", files.key),
            ("--tls-ca", files.ca),
        ):
            try:
                contents[flag] = path.read_bytes()
            except OSError as error:
                raise SystemExit(f"{flag} {path}: {error.strerror}") from None
        actual = role_of(contents["--tls-cert"])
        if actual is not role:
            named = actual.value if actual else "not a certificate of this project"
            raise SystemExit(f"--tls-cert {files.cert}: {named}; this process needs {role.value}")
        if files.key.stat().st_mode & 0o077:
            log.warning("--tls-key %s is readable by other users: chmod 600 it", files.key)
        return cls(contents["--tls-cert"], contents["--tls-key"], contents["--tls-ca"])

    def server_credentials(self, require_client_certificate: bool) -> grpc.ServerCredentials:
        """grpcio either requires a client certificate or never asks for one: no middle way."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=require_client_certificate,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """This process as a TLS client: presents its certificate, trusts only the CA."""
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


def add_arguments(parser: argparse.ArgumentParser, insecure_option: bool = True) -> None:
    """The TLS flags both processes (and the fleet simulator) share."""
    group = parser.add_argument_group("security")
    group.add_argument("--tls-cert", type=Path, metavar="FILE", help="this process's certificate")
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (0600)")
    group.add_argument("--tls-ca", type=Path, metavar="FILE", help="the CA certificate to trust")
    if not insecure_option:
        return
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext on a non-loopback address (development only)",
    )


def files_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TlsFiles | None:
    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if not any(given):
        return None
    if not all(given):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT (or unix:PATH) can only be reached from this computer."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name or an empty host (every interface): cannot vouch for it


def check_plaintext_listen(address: str, insecure: bool) -> None:
    """Plaintext only on loopback, unless asked for explicitly; raises SystemExit otherwise."""
    if not is_loopback(address) and not insecure:
        raise SystemExit(
            f"refusing to listen on {address} in plaintext: give --tls-cert, --tls-key and "
            "--tls-ca, or --insecure to accept plaintext off loopback (development only)"
        )


def plaintext_warning(address: str, consequence: str) -> str:
    where = "on loopback" if is_loopback(address) else "OFF LOOPBACK (--insecure)"
    return (
        f"development mode: plaintext {where}; nothing is encrypted and {consequence}. "
        "Give --tls-cert, --tls-key and --tls-ca for production."
    )


# What grpc-core says when a handshake fails, and what that means for an operator.
_TLS_REASONS = (
    (re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)"), "{peer}'s certificate did not verify: {0}"),
    (
        re.compile(r"Hostname Verification Check failed"),
        "{peer}'s certificate is not issued for this address",
    ),
    (re.compile(r"WRONG_VERSION_NUMBER"), "{peer} does not speak TLS (a plaintext {noun}?)"),
    (
        re.compile(r"(?:Tls|Ssl) handshake failed.*?SSL_ERROR_SSL: ([^:]+:){3}([^:]+)"),
        "handshake failed: {1}",
    ),
)


def handshake_failure(message: str, noun: str) -> str | None:
    """What a failed handshake in grpc's `message` means, said of "the `noun`"; None if none."""
    for pattern, explanation in _TLS_REASONS:
        match = pattern.search(message)
        if match:
            return explanation.format(*match.groups(), peer=f"the {noun}", noun=noun)
    return None


def explain_handshake_failure(message: str) -> str:
    """grpc's connection-failure message toward an agent, with the TLS reason first if any.

    A refused client certificate cannot be told apart from a dropped connection: under
    TLS 1.3 the agent checks it after the client's side of the handshake is done, and
    the client only sees the socket close.
    """
    reason = handshake_failure(message, "agent")
    if reason is not None:
        return f"TLS: {reason} ({message})"
    if message.endswith("Socket closed"):
        return f"{message} (under TLS: the agent may have refused the server's certificate)"
    return message
