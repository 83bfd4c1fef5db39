"""backupctl's config file of contexts, through the installed command against live servers."""

import asyncio
import stat
import subprocess
from pathlib import Path

import yaml
from cli_support import BACKUPCTL, NO_CONFIG, clean_environment, one_line_error
from security_support import Pki

from backup_server.app import BackupServer


async def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """backupctl with no BACKUP_SERVER: where it goes comes from the context unless `env` says."""
    environment = clean_environment(**env)
    if "BACKUPCTL_CONFIG" not in env:
        environment.pop("BACKUPCTL_CONFIG")
    return await asyncio.to_thread(
        subprocess.run,
        [BACKUPCTL, *args], capture_output=True, text=True, env=environment, timeout=60,
    )  # fmt: skip


async def test_contexts_pick_the_server_and_flags_and_variables_win(
    server: BackupServer, closed_address: str, tmp_path: Path
) -> None:
    """set-context writes $XDG_CONFIG_HOME/backupctl/config.yaml (0600); the current context
    picks the server, --context another, and BACKUP_SERVER or --server override both."""
    home = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    made = await run("config", "set-context", "lab", "--server", server.address, **home)
    assert made.returncode == 0 and "context lab (current)" in made.stdout, made.stderr
    assert (await run("config", "set-context", "down", "--server", closed_address, **home)).returncode == 0
    path = tmp_path / "xdg" / "backupctl" / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["current-context"] == "lab"

    created = await run("group", "create", "lab", "--name", "Lab", **home)
    assert created.returncode == 0 and "created protection group lab" in created.stdout, created
    down = await run("--context", "down", "group", "list", **home)
    assert closed_address in one_line_error(down, "UNAVAILABLE: cannot reach")
    overridden = await run("group", "list", "--server", closed_address, **home)
    assert closed_address in one_line_error(overridden, "UNAVAILABLE")
    assert (await run("group", "list", **home, BACKUP_SERVER=closed_address)).returncode == 1

    switched = await run("config", "use-context", "down", **home)
    assert switched.returncode == 0 and (await run("config", "current-context", **home)).stdout == "down\n"
    listed = await run("config", "get-contexts", **home)
    assert "* " in next(line for line in listed.stdout.splitlines() if " down " in line)
    assert (await run("group", "show", "lab", "--context", "lab", **home)).returncode == 0
    unknown = await run("config", "use-context", "nope", **home)
    assert "'nope'" in one_line_error(unknown, "no context") and "down, lab" in unknown.stderr


async def test_a_context_carries_tls_files_and_a_token(
    start_server, pki: Pki, tmp_path: Path
) -> None:
    """A context with --tls-ca and the operator's pair reaches a mutual-TLS server with no
    flags; relative paths in a hand-written file are relative to the file."""
    server = await start_server(tls=pki.tls(pki.issued("server")))
    config = tmp_path / "conf" / "config.yaml"
    made = await run(
        "config", "set-context", "secure", "--server", server.address, "--tls-ca", str(pki.ca),
        "--tls-cert", str(pki.issued("operator").cert),
        "--tls-key", str(pki.issued("operator").key), BACKUPCTL_CONFIG=str(config),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = await run("policy", "list", "-o", "json", BACKUPCTL_CONFIG=str(config))
    assert listed.returncode == 0 and '"policies": []' in listed.stdout, listed.stderr
    plain = await run("policy", "list", "--server", server.address, BACKUPCTL_CONFIG=str(tmp_path / "x"))
    assert plain.returncode == 1

    (tmp_path / "conf" / "ca.pem").write_bytes(pki.ca.read_bytes())
    config.write_text(
        "current-context: relative\ncontexts:\n  relative:\n"
        f"    server: {server.address}\n    tls-ca: ca.pem\n"
    )
    refused = await run("policy", "list", BACKUPCTL_CONFIG=str(config))
    # ca.pem was found beside the file: TLS was spoken, and the server wanted a certificate.
    assert "require a client certificate" in one_line_error(refused, "UNAVAILABLE")
    config.write_text("contexts:\n  broken:\n    sever: x\n")
    broken = await run("--context", "broken", "policy", "list", BACKUPCTL_CONFIG=str(config))
    assert "unknown keys sever" in one_line_error(broken, str(config))


async def test_server_pointing_at_an_agent_says_so(start_agent) -> None:
    """--server given an agent's port says it is an agent, not UNIMPLEMENTED: Method not found."""
    agent = await start_agent("a1")
    result = await run("policy", "list", "--server", agent.address, BACKUPCTL_CONFIG=NO_CONFIG)
    line = one_line_error(result, f"{agent.address} is a backup agent")
    assert "not the backup server" in line and "Method not found" not in line
