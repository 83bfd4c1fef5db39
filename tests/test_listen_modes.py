"""Plaintext only on loopback unless --insecure; the start-up log says which mode is active; TLS flags are checked at start."""

import logging
import subprocess
import sys

import pytest
from security_support import TOKEN

from agent_stub.app import AgentConfig, AgentServer
from backup.security.tls import check_plaintext_listen, is_loopback
from backup_server.__main__ import parse_args
from backup_server.app import BackupServer, ServerConfig


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:50051", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("unix:/run/agent.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("192.0.2.1:50051", False),
        ("backup.example.net:50051", False),
    ],
)
def test_which_addresses_are_loopback(address, loopback) -> None:
    """Loopback IPs, localhost and unix sockets are loopback; every interface, other IPs and DNS names are not."""
    assert is_loopback(address) is loopback


def test_insecure_lifts_the_refusal() -> None:
    """A non-loopback address is refused in plaintext, and accepted with --insecure."""
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0:50051 in plaintext"):
        check_plaintext_listen("0.0.0.0:50051", insecure=False)
    check_plaintext_listen("0.0.0.0:50051", insecure=True)


@pytest.mark.parametrize("address", ["0.0.0.0:0", "192.0.2.1:0"])
async def test_both_processes_refuse_plaintext_off_loopback(tmp_path, address) -> None:
    """The server and the agent refuse to start in plaintext on a non-loopback address, before binding anything."""
    server = BackupServer(ServerConfig(listen=address, db=tmp_path / "server.db"))
    with pytest.raises(SystemExit, match="refusing to listen"):
        await server.start()
    assert not (tmp_path / "server.db").exists()
    agent = AgentServer(AgentConfig(address, "web-1", tmp_path / "agent"))
    with pytest.raises(SystemExit, match="refusing to listen"):
        await agent.start()
    assert not (tmp_path / "agent" / "agent.lock").exists()


def test_the_command_line_refuses_and_says_why(tmp_path) -> None:
    """`backup-server --listen 0.0.0.0:PORT` without TLS exits 1 with one line naming --insecure and the TLS flags."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backup_server",
            "--listen",
            "0.0.0.0:0",
            "--db",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0:0 in plaintext" in done.stderr
    assert "--insecure" in done.stderr and "--tls-cert" in done.stderr


async def test_development_mode_is_logged_as_a_warning(start_server, start_agent, caplog) -> None:
    """Without TLS both processes log 'plaintext, development mode' and a warning line saying so."""
    with caplog.at_level(logging.INFO):
        await start_server()
        await start_agent("web-1")
    listening = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert len(listening) == 2
    assert all("plaintext, development mode: no authentication" in line for line in listening)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and "development mode: plaintext on loopback" in r.getMessage()
    ]
    assert len(warnings) == 2


async def test_secure_modes_are_logged(start_server, start_agent, pki, tmp_path, caplog) -> None:
    """With TLS the log line says mutual TLS (and which operator credential is needed), and no plaintext warning appears."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with caplog.at_level(logging.INFO):
        await start_server(tls=pki.tls(pki.issued("server")))
        await start_server(
            tls=pki.tls(pki.issued("server")), api_token_file=token, db=tmp_path / "b.db"
        )
        await start_server(api_token_file=token, db=tmp_path / "c.db")
        await start_agent("web-1", tls=pki.tls(pki.agent()))
    listening = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert "(mutual TLS: operators need an operator certificate" in listening[0]
    assert "(TLS: operators need the API token" in listening[1]
    assert "(plaintext, development mode: operators need the API token)" in listening[2]
    assert "(mutual TLS: only the backup server's certificate may send commands)" in listening[3]
    plaintext_warnings = [
        r for r in caplog.records if "development mode: plaintext" in r.getMessage()
    ]
    assert len(plaintext_warnings) == 1  # the token-only server's


def test_tls_flags_go_together() -> None:
    """--tls-cert without --tls-key and --tls-ca is a usage error."""
    with pytest.raises(SystemExit) as usage:
        parse_args(["--tls-cert", "server.pem"])
    assert usage.value.code == 2


@pytest.mark.parametrize("wrong", ["agent", "operator"])
def test_a_certificate_of_another_role_is_refused_at_start(pki, tmp_path, wrong) -> None:
    """The server will not start with an agent's or an operator's certificate as its own, nor an agent with the server's."""
    pair = pki.agent() if wrong == "agent" else pki.issued("operator")
    with pytest.raises(SystemExit, match=f"backup-{wrong}; this process needs backup-server"):
        BackupServer(ServerConfig(db=tmp_path / "s.db", tls=pki.tls(pair)))
    with pytest.raises(SystemExit, match="needs backup-agent"):
        AgentServer(
            AgentConfig("127.0.0.1:0", "a", tmp_path / "a", tls=pki.tls(pki.issued("server")))
        )


@pytest.mark.parametrize(("content", "problem"), [("short", "at least 16"), ("", "at least 16")])
def test_a_weak_token_file_is_refused(tmp_path, content, problem) -> None:
    """An API token shorter than 16 characters (or an empty file) stops the server at start-up."""
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(SystemExit, match=problem):
        BackupServer(ServerConfig(db=tmp_path / "s.db", api_token_file=path))


def test_missing_tls_files_are_named(tmp_path, pki) -> None:
    """A TLS file that cannot be read stops the process with the flag and the path."""
    files = pki.tls(pki.issued("server"))
    missing = type(files)(files.cert, tmp_path / "nowhere.key", files.ca)
    with pytest.raises(SystemExit, match=r"--tls-key .*nowhere.key: No such file"):
        BackupServer(ServerConfig(db=tmp_path / "s.db", tls=missing))
