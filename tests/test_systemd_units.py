"""The systemd units in examples/systemd: valid for systemd-analyze, sandboxed, and their
ExecStart lines start the real processes."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backup.ctl import pki as certs

from conftest import Process

UNITS = Path(__file__).resolve().parent.parent / "examples" / "systemd"
INSTALLED = "/opt/backup-control-plane/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "StateDirectory=")


def exec_start(unit: Path) -> list[str]:
    """The unit's ExecStart command line, continuation lines joined."""
    text = unit.read_text().replace("\\\n", " ")
    match = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
    assert match, unit
    return shlex.split(match.group(1))


@pytest.mark.parametrize("name", ["backup-server", "backup-agent"])
def test_unit_verifies_and_is_sandboxed(name: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (on a copy starting the venv's binary), and it
    uses the sandbox: no new privileges, a read-only system, a private /tmp, a state directory."""
    text = (UNITS / f"{name}.service").read_text()
    for option in HARDENING:
        assert re.search(rf"^{re.escape(option)}", text, re.MULTILINE), option
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    copy = tmp_path / f"{name}.service"
    copy.write_text(text.replace(INSTALLED, VENV_BIN))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr


@pytest.mark.parametrize(
    ("name", "credentials"),
    [
        ("backup-server", {"server.pem": "server.pem", "server.key": "server.key"}),
        ("backup-agent", {"agent.pem": "agents/a.pem", "agent.key": "agents/a.key"}),
    ],
)
def test_exec_start_runs_the_process(name: str, credentials: dict[str, str], tmp_path: Path) -> None:
    """The ExecStart line, with systemd's %S, %d and %H filled in as systemd would (on
    loopback, port 0), starts the process with TLS: every option it gives exists."""
    pki = tmp_path / "pki"
    certs.init(pki, "127.0.0.1:50051")
    certs.issue_agent(pki, "a", "127.0.0.1:50061")
    loaded = tmp_path / "credentials"
    loaded.mkdir()
    for target, source in {"ca.pem": "ca.pem", **credentials}.items():
        (loaded / target).write_bytes((pki / source).read_bytes())
    state = tmp_path / "state"
    (state / name).mkdir(parents=True)
    command = []
    for arg in exec_start(UNITS / f"{name}.service"):
        arg = arg.replace("%S", str(state)).replace("%d", str(loaded)).replace("%H", "host")
        command.append(re.sub(r"^0\.0\.0\.0:\d+$", "127.0.0.1:0", arg))
    assert command[0] == f"{INSTALLED}{name}"
    process = Process([], tmp_path / f"{name}.log", command=[VENV_BIN + name, *command[1:]])
    try:
        process.wait_listening()
        assert "TLS" in process.log.read_text()
    finally:
        process.stop()
