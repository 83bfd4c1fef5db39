"""`backupctl certs issue-operator` and `certs renew`, through the installed command."""

import datetime
from pathlib import Path

from cli_support import backupctl, one_line_error
from cryptography import x509
from cryptography.x509.oid import NameOID

from backup.ctl import pki as certs
from backup.security.roles import Role, role_of
from backup.security.tls import TlsFiles


async def test_issue_operator_gives_a_person_a_working_certificate(
    start_server, tmp_path: Path
) -> None:
    """issue-operator writes operators/NAME.pem (CN=NAME, the operator role, key 0600), which a
    mutual-TLS server accepts; the same name twice is refused, nothing overwritten."""
    made = await backupctl(
        "unused:1", "certs", "init", "--dir", "pki", "--server-address", "127.0.0.1:50051",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    issued = await backupctl(
        "unused:1", "certs", "issue-operator", "ann", "--dir", "pki", cwd=tmp_path
    )
    assert issued.returncode == 0, issued.stderr
    assert "wrote pki/operators/ann.pem and pki/operators/ann.key (0600)" in issued.stdout
    pki = tmp_path / "pki"
    pem = (pki / "operators" / "ann.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ann"
    assert role_of(pem) == Role.OPERATOR
    server = await start_server(
        tls=certs_files(pki, "server.pem", "server.key"), db=tmp_path / "s.db"
    )
    listed = await backupctl(
        server.address, "policy", "list", "--tls-ca", str(pki / "ca.pem"),
        "--tls-cert", str(pki / "operators" / "ann.pem"),
        "--tls-key", str(pki / "operators" / "ann.key"),
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    again = await backupctl(
        "unused:1", "certs", "issue-operator", "ann", "--dir", "pki", cwd=tmp_path
    )
    assert "exists" in one_line_error(again, "pki/operators/ann.")
    assert (pki / "operators" / "ann.pem").read_bytes() == pem


def certs_files(pki: Path, cert: str, key: str) -> TlsFiles:
    """A server's TLS files in a certificate directory made by `certs init`."""
    return TlsFiles(pki / cert, pki / key, pki / "ca.pem")


async def test_renew_extends_a_certificate_that_is_about_to_expire(
    start_server, tmp_path: Path
) -> None:
    """A server certificate two days from expiry, renewed: same key, names and role, valid
    for the full term, the old one kept as .previous; the server serves with it."""
    pki = tmp_path / "pki"
    certs.init(pki, "127.0.0.1:50051")
    authority = certs.load_authority(pki)
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    expiring, key = certs.sign(authority, Role.SERVER, "backup-server", ["127.0.0.1"], not_after=soon)
    certs.write_pair(pki / "short.pem", pki / "short.key", expiring, key)
    key_before = (pki / "short.key").read_bytes()
    renewed = await backupctl(
        "unused:1", "certs", "renew", "pki/short.pem", "--dir", "pki", cwd=tmp_path
    )
    assert renewed.returncode == 0, renewed.stderr
    assert "renewed pki/short.pem: valid until" in renewed.stdout and "key is unchanged" in renewed.stdout
    fresh = x509.load_pem_x509_certificate((pki / "short.pem").read_bytes())
    assert fresh.not_valid_after_utc - soon > datetime.timedelta(days=800)
    assert fresh.public_key() == expiring.public_key() and fresh.subject == expiring.subject
    assert fresh.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == (
        expiring.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )
    assert (pki / "short.key").read_bytes() == key_before
    assert (pki / "short.pem.previous").read_bytes() == expiring.public_bytes(
        certs.serialization.Encoding.PEM
    )
    server = await start_server(tls=certs_files(pki, "short.pem", "short.key"), db=tmp_path / "s.db")
    listed = await backupctl(
        server.address, "policy", "list", "--tls-ca", str(pki / "ca.pem"),
        "--tls-cert", str(pki / "operator.pem"), "--tls-key", str(pki / "operator.key"),
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr

    ca_renewed = await backupctl("unused:1", "certs", "renew", "pki/ca.pem", "--dir", "pki", cwd=tmp_path)
    assert ca_renewed.returncode == 0, ca_renewed.stderr
    other = tmp_path / "other"
    certs.init(other, "127.0.0.1:50051")
    foreign = await backupctl(
        "unused:1", "certs", "renew", "other/server.pem", "--dir", "pki", cwd=tmp_path
    )
    assert "was not issued by the CA in pki" in one_line_error(foreign, "other/server.pem")
