"""The project's private CA and the certificates it issues, made with `cryptography`.

Layout of a certificate directory (what `backupctl certs init` and `issue-agent` write):

    DIR/ca.pem, DIR/ca.key                the private CA (keep ca.key offline if you can)
    DIR/server.pem, DIR/server.key        the backup server: SAN = its --server-address host
    DIR/operator.pem, DIR/operator.key    an operator's client certificate
    DIR/agents/NAME.pem, NAME.key         an agent: SAN = its address's host
    DIR/operators/NAME.pem, NAME.key      an operator of their own (`issue-operator NAME`)

The role travels in the certificate twice, so that one role cannot act as another:
- the subject's organizational unit (OU) names it: `backup-server`, `backup-agent` or
  `backup-operator`; the processes read it from the peer certificate and authorize on it;
- the extended key usage limits what TLS lets the key do at all: a server certificate is
  serverAuth + clientAuth (it serves PolicyService and is the client of every agent), an
  agent's is serverAuth only (it can never be a client of anything), an operator's is
  clientAuth only (it can never pose as a server or an agent).

Keys are EC P-256, written 0600 and never overwritten; certificates are 0644. `renew`
issues a certificate again for the same key (the previous one kept as NAME.pem.previous),
so only the certificate file has to be copied again.
"""

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backup import validation
from backup.security.roles import Role, role_of  # noqa: F401 - issued and read together

ORGANIZATION = "backup control plane"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825
# Clocks of a fleet disagree a little; a certificate made now must work everywhere now.
CLOCK_SKEW = datetime.timedelta(minutes=5)
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


KEY_USAGES: dict[Role, list[x509.ObjectIdentifier]] = {
    Role.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    Role.AGENT: [ExtendedKeyUsageOID.SERVER_AUTH],
    Role.OPERATOR: [ExtendedKeyUsageOID.CLIENT_AUTH],
}


class CertificateError(Exception):
    """A certificate cannot be made or read; the message is the one line to show."""


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA in memory, able to sign."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def host_of(address: str) -> str:
    """The host of HOST:PORT (brackets of an IPv6 host removed)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not validation.is_port(port):
        raise CertificateError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: an existing key is somebody's identity, never silently replaced.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CertificateError(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask
        out.write(pem)


def _write_cert(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise CertificateError(f"{path} exists; not overwriting it")


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _name(common_name: str, role: Role | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if role is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(authority: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf signs TLS handshakes (ECDHE-ECDSA) and nothing else."""
    return x509.KeyUsage(
        digital_signature=not authority,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def new_authority(
    common_name: str = "backup control plane CA", valid_days: int = CA_VALID_DAYS
) -> Authority:
    """A fresh self-signed CA that may sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(common_name, None)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(authority=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def sign(
    authority: Authority,
    role: Role,
    common_name: str,
    hosts: list[str],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate and its new key for `role`, with `hosts` in the SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, role))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - CLOCK_SKEW)
        .not_valid_after(not_after or now + datetime.timedelta(days=LEAF_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(KEY_USAGES[role]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alternative_name(host) for host in hosts]),
            critical=False,
        )
    return builder.sign(authority.key, hashes.SHA256()), key


def write_pair(
    cert_path: Path, key_path: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    _write_key(key_path, key)
    _write_cert(cert_path, certificate)
    return Issued(cert_path, key_path)


def load_authority(directory: Path) -> Authority:
    """The CA of a certificate directory made by `init`."""
    try:
        certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as error:
        raise CertificateError(f"{error.filename} not found: run `certs init` first") from None
    except ValueError as error:
        raise CertificateError(f"the CA in {directory} cannot be read: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{directory / 'ca.key'} is not an EC key")
    return Authority(certificate, key)


@dataclass(frozen=True)
class Initialized:
    ca: Issued
    server: Issued
    operator: Issued


def init(directory: Path, server_address: str, operator_name: str = "operator") -> Initialized:
    """Creates the CA, the server's certificate (SAN: the address's host) and an operator's."""
    host = host_of(server_address)
    paths = [
        directory / f"{stem}.{ext}"
        for stem in ("ca", "server", "operator")
        for ext in ("pem", "key")
    ]
    _refuse_existing(*paths)
    _private_dir(directory)
    authority = new_authority()
    ca = write_pair(
        directory / "ca.pem", directory / "ca.key", authority.certificate, authority.key
    )
    server = write_pair(
        directory / "server.pem",
        directory / "server.key",
        *sign(authority, Role.SERVER, Role.SERVER.value, [host]),
    )
    operator = write_pair(
        directory / "operator.pem",
        directory / "operator.key",
        *sign(authority, Role.OPERATOR, operator_name, []),
    )
    return Initialized(ca, server, operator)


def issue_agent(directory: Path, name: str, address: str) -> Issued:
    """Issues DIR/agents/NAME.pem and .key for the agent serving at `address`."""
    if not AGENT_NAME.fullmatch(name):
        raise CertificateError(
            f"{name[:80]!r} is not a usable agent name (letters, digits, '.', '_', '-')"
        )
    host = host_of(address)
    authority = load_authority(directory)
    agents = directory / "agents"
    cert_path, key_path = agents / f"{name}.pem", agents / f"{name}.key"
    _refuse_existing(cert_path, key_path)
    _private_dir(agents)
    return write_pair(cert_path, key_path, *sign(authority, Role.AGENT, name, [host]))


def issue_operator(directory: Path, name: str) -> Issued:
    """Issues DIR/operators/NAME.pem and .key: an operator's own certificate (CN=NAME), so
    that the server's logs tell one operator from another."""
    if not AGENT_NAME.fullmatch(name):
        raise CertificateError(
            f"{name[:80]!r} is not a usable operator name (letters, digits, '.', '_', '-')"
        )
    authority = load_authority(directory)
    operators = directory / "operators"
    cert_path, key_path = operators / f"{name}.pem", operators / f"{name}.key"
    _refuse_existing(cert_path, key_path)
    _private_dir(operators)
    return write_pair(cert_path, key_path, *sign(authority, Role.OPERATOR, name, []))


@dataclass(frozen=True)
class Renewed:
    """A certificate issued again for the same key, names and role, with a new validity."""

    cert: Path
    previous: Path
    was_valid_until: datetime.datetime
    valid_until: datetime.datetime


def renew(directory: Path, cert_path: Path) -> Renewed:
    """Issues `cert_path` again with DIR's CA: the same subject, names, role and public key
    (so its key file stays as it is), valid from now; the old one is kept as .previous."""
    authority = load_authority(directory)
    try:
        old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        raise CertificateError(f"{cert_path} not found") from None
    except ValueError:
        raise CertificateError(f"{cert_path} is not a PEM certificate") from None
    try:
        # Every CA this tool makes has the same name: only the signature tells them apart.
        old.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"{cert_path} was not issued by the CA in {directory}") from None
    is_ca = old.public_key() == authority.key.public_key()
    signing_key = authority.key
    now = datetime.datetime.now(datetime.UTC)
    days = CA_VALID_DAYS if is_ca else LEAF_VALID_DAYS
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(authority.certificate.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    renewed = builder.sign(signing_key, hashes.SHA256())
    previous = cert_path.with_name(cert_path.name + ".previous")
    previous.write_bytes(cert_path.read_bytes())
    staging = cert_path.with_name(f".{cert_path.name}.renewing")
    _write_cert(staging, renewed)
    os.replace(staging, cert_path)
    return Renewed(cert_path, previous, old.not_valid_after_utc, renewed.not_valid_after_utc)
