"""The certificate module: the private CA, server, operator and agent certificates, roles in them, keys 0600."""

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backup.ctl import pki as certs
from backup.ctl.pki import CertificateError, Role


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def alternative_names(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_init_writes_the_ca_server_and_operator_with_private_keys(tmp_path) -> None:
    """`init` writes ca/server/operator .pem and .key: keys 0600, certificates 0644, the directory 0700, all issued by the CA."""
    previous = os.umask(0)  # the modes must not depend on a lax umask
    try:
        made = certs.init(tmp_path / "pki", "127.0.0.1:50051")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "pki") == 0o700
    ca = load(made.ca.cert)
    for issued in (made.ca, made.server, made.operator):
        assert mode(issued.key) == 0o600
        assert mode(issued.cert) == 0o644
        load(issued.cert).verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_roles_are_in_the_subject_and_the_key_usage(tmp_path) -> None:
    """Server: OU backup-server, serverAuth+clientAuth; operator: OU backup-operator, clientAuth only; agent: OU backup-agent, serverAuth only."""
    made = certs.init(tmp_path, "127.0.0.1:50051")
    agent = certs.issue_agent(tmp_path, "web-1", "127.0.0.1:50061")
    expected = {
        made.server.cert: (
            Role.SERVER,
            {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
        ),
        made.operator.cert: (Role.OPERATOR, {ExtendedKeyUsageOID.CLIENT_AUTH}),
        agent.cert: (Role.AGENT, {ExtendedKeyUsageOID.SERVER_AUTH}),
    }
    for path, (role, usages) in expected.items():
        certificate = load(path)
        units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        assert [unit.value for unit in units] == [role.value]
        assert key_usages(certificate) == usages
        assert certs.role_of(path.read_bytes()) is role


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", ipaddress.ip_address("127.0.0.1")),
        ("[::1]:50051", ipaddress.ip_address("::1")),
        ("backup.example.net:443", "backup.example.net"),
    ],
)
def test_the_server_address_host_is_in_the_san(tmp_path, address, expected) -> None:
    """The server's SAN holds the host of --server-address: an IP address entry for IPs, a DNS entry for names."""
    made = certs.init(tmp_path, address)
    names = load(made.server.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    if isinstance(expected, str):
        assert names.value.get_values_for_type(x509.DNSName) == [expected]
    else:
        assert names.value.get_values_for_type(x509.IPAddress) == [expected]


def test_issue_agent_writes_its_pair_under_agents_with_its_address(tmp_path) -> None:
    """`issue_agent NAME --address` writes agents/NAME.pem and .key (0600), CN = NAME, SAN = the address's host, issued by the CA."""
    made = certs.init(tmp_path, "127.0.0.1:50051")
    issued = certs.issue_agent(tmp_path, "db-1", "db-1.example.net:50061")
    assert issued.cert == tmp_path / "agents" / "db-1.pem"
    assert mode(issued.key) == 0o600
    certificate = load(issued.cert)
    certificate.verify_directly_issued_by(load(made.ca.cert))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db-1"
    assert alternative_names(certificate) == ["db-1.example.net"]


def test_nothing_is_overwritten(tmp_path) -> None:
    """A second `init`, or an agent issued twice, is refused and leaves the existing files as they were."""
    made = certs.init(tmp_path, "127.0.0.1:50051")
    before = made.ca.key.read_bytes()
    with pytest.raises(CertificateError, match="exists"):
        certs.init(tmp_path, "127.0.0.1:50051")
    assert made.ca.key.read_bytes() == before
    certs.issue_agent(tmp_path, "web-1", "127.0.0.1:50061")
    with pytest.raises(CertificateError, match="exists"):
        certs.issue_agent(tmp_path, "web-1", "127.0.0.1:50062")


@pytest.mark.parametrize(
    ("name", "address", "problem"),
    [
        ("../escape", "127.0.0.1:50061", "not a usable agent name"),
        (".hidden", "127.0.0.1:50061", "not a usable agent name"),
        ("web-1", "127.0.0.1", "not HOST:PORT"),
        ("web-1", "127.0.0.1:0", "not HOST:PORT"),
    ],
)
def test_bad_agent_names_and_addresses_are_refused(tmp_path, name, address, problem) -> None:
    """An agent name that is not a plain file name, or an address without a valid port, is refused."""
    certs.init(tmp_path, "127.0.0.1:50051")
    with pytest.raises(CertificateError, match=problem):
        certs.issue_agent(tmp_path, name, address)
    assert not (tmp_path / "agents").exists()


def test_issuing_without_a_ca_says_to_run_init(tmp_path) -> None:
    """Issuing an agent certificate in a directory without a CA says to run `certs init` first."""
    with pytest.raises(CertificateError, match="certs init"):
        certs.issue_agent(tmp_path, "web-1", "127.0.0.1:50061")


def test_role_of_names_no_role_for_foreign_certificates() -> None:
    """A CA certificate (no OU), a certificate whose OU is no known role, or garbage has no role."""
    ca = certs.new_authority().certificate
    assert certs.role_of(ca.public_bytes(serialization.Encoding.PEM)) is None
    assert certs.role_of(b"not a certificate") is None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "backup-admin")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert certs.role_of(certificate.public_bytes(serialization.Encoding.PEM)) is None
