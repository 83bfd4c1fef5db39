"""Who a certificate speaks for: the role named in its subject's organizational unit.

Both processes authorize on it; issuing certificates is backupctl's business (`backup.ctl.pki`).
"""

import enum
import functools

from cryptography import x509
from cryptography.x509.oid import NameOID


class Role(enum.StrEnum):
    """Who a certificate speaks for; the value is the subject's OU."""

    SERVER = "backup-server"
    AGENT = "backup-agent"
    OPERATOR = "backup-operator"


@functools.lru_cache(maxsize=4096)
def role_of(certificate_pem: bytes) -> Role | None:
    """The role named in a certificate's OU, or None when it names no single known role."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        return None
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(units) != 1:
        return None
    try:
        return Role(str(units[0].value))
    except ValueError:
        return None
