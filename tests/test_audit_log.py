"""The server logs who asked for each change: the operator certificate's name, or the token."""

import logging
from pathlib import Path

import pytest
from cli_support import backupctl

from backup.ctl import pki as certs
from backup.security.tls import TlsFiles


async def test_each_change_is_logged_with_the_operators_name(
    start_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two operators with certificates of their own (issue-operator): the server's log names
    which of them created and which deleted the group."""
    pki = tmp_path / "pki"
    certs.init(pki, "127.0.0.1:50051")
    for name in ("ann", "bob"):
        certs.issue_operator(pki, name)
    server = await start_server(
        tls=TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem"), db=tmp_path / "s.db"
    )

    def as_operator(name: str) -> list[str]:
        operator = pki / "operators" / name
        return [
            "--tls-ca", str(pki / "ca.pem"),
            "--tls-cert", f"{operator}.pem", "--tls-key", f"{operator}.key",
        ]  # fmt: skip

    caplog.set_level(logging.INFO, logger="backup_server.service")
    made = await backupctl(server.address, "group", "create", "lab", "--name", "Lab", *as_operator("ann"))
    assert made.returncode == 0, made.stderr
    gone = await backupctl(server.address, "group", "delete", "lab", *as_operator("bob"))
    assert gone.returncode == 0, gone.stderr
    lines = [r.getMessage() for r in caplog.records if r.name == "backup_server.service"]
    assert "create protection group 'lab' requested by operator 'ann' (certificate)" in lines
    assert "delete protection group 'lab' requested by operator 'bob' (certificate)" in lines
