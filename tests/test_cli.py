"""backupctl through its installed entry point, against a live server and real agents."""

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import pytest
from cli_support import BACKUPCTL, backupctl, one_line_error
from click.testing import CliRunner
from google.protobuf import json_format

from agent_stub.app import AgentServer
from backup.ctl import cli
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

EXIT_SOME_NOT_RECEIVED = 3


@pytest.fixture
async def fleet(
    server: BackupServer, start_agent: Callable[[str], Awaitable[AgentServer]]
) -> dict[str, str]:
    """Two live agents by name; a third live one sits in a pre-installed-agents group."""
    agents = {name: (await start_agent(name)).address for name in ("a1", "a2", "local")}
    created = await backupctl(
        server.address, "group", "create", "desks", "--name", "Desks", "--kind",
        "preinstalled-agents", "--computer", f"local={agents['local']}",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    return agents


def policy_flags(tmp_path: Path, source: Path) -> list[str]:
    return ["--source", str(source), "--repository", str(tmp_path / "repository")]


async def test_groups_and_policies_round_trip(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """Create, list, show, update and delete groups and policies; JSON is the proto's form."""
    address = server.address
    result = await backupctl(
        address, "group", "create", "lab", "--name", "Lab", "--computer", "ws1=127.0.0.1:50061"
    )
    assert result.returncode == 0, result.stderr
    assert "created protection group lab" in result.stdout
    listed = await backupctl(address, "group", "list", "-o", "json")
    groups = json_format.Parse(listed.stdout, api.ListProtectionGroupsResponse()).protection_groups
    assert [(g.id, g.kind) for g in groups] == [("lab", pb.PROTECTION_GROUP_KIND_MANUAL)]

    result = await backupctl(
        address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", "db=127.0.0.1:50062", "--group", "lab", "--retention", "5",
        "--throttle", "1MiB", *policy_flags(tmp_path, source_tree),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created policy nightly" in result.stdout
    result = await backupctl(address, "policy", "update", "nightly", "--description", "at two")
    assert result.returncode == 0, result.stderr
    shown = await backupctl(address, "policy", "show", "nightly", "-o", "json")
    assert '"throttleBytesPerSecond": "1048576"' in shown.stdout  # lowerCamelCase, int64 quoted
    policy = json_format.Parse(shown.stdout, pb.BackupPolicy())
    assert (policy.description, policy.retention_points) == ("at two", 5)
    assert [(c.name, c.address) for c in policy.computers] == [("db", "127.0.0.1:50062")]
    assert list(policy.protection_group_ids) == ["lab"]
    table = await backupctl(address, "policy", "list")
    assert "nightly" in table.stdout and "Nightly" in table.stdout

    in_use = await backupctl(address, "group", "delete", "lab")
    one_line_error(in_use, "FAILED_PRECONDITION")
    assert (await backupctl(address, "policy", "delete", "nightly")).returncode == 0
    deleted = await backupctl(address, "group", "delete", "lab", "-o", "json")
    assert (deleted.returncode, json.loads(deleted.stdout)) == (0, {})
    one_line_error(await backupctl(address, "policy", "show", "nightly"), "NOT_FOUND")


async def test_policy_from_yaml_then_update_from_json(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """-f takes YAML or JSON in the proto's JSON form; an update changes only the file's keys."""
    created_file = tmp_path / "nightly.yaml"
    created_file.write_text(
        "id: nightly\nname: Nightly\ncomputers:\n  - {name: db, address: '127.0.0.1:50062'}\n"
        f"sourcePaths: ['{source_tree}']\nrepository: {tmp_path / 'repository'}\n"
    )
    result = await backupctl(server.address, "policy", "create", "-f", str(created_file))
    assert result.returncode == 0, result.stderr
    changes = tmp_path / "changes.json"
    changes.write_text(json.dumps({"description": "from a file", "retention_points": 3}))
    result = await backupctl(
        server.address, "policy", "update", "nightly", "-f", str(changes), "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    policy = json_format.Parse(result.stdout, pb.BackupPolicy())
    assert (policy.name, policy.description, policy.retention_points) == (
        "Nightly",
        "from a file",
        3,
    )
    assert [c.name for c in policy.computers] == ["db"]

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nretension: 3\n")
    bad = await backupctl(server.address, "policy", "create", "-f", str(unknown))
    assert bad.returncode == 1 and "retension" in bad.stderr and "Traceback" not in bad.stderr


async def test_start_and_stop_exit_3_with_a_closed_and_a_hung_computer(
    server: BackupServer,
    fleet: dict[str, str],
    closed_address: str,
    hung_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """Exit 3 when some computer did not receive it; the table and statistics say which."""
    result = await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", f"a1={fleet['a1']}", "--computer", f"a2={fleet['a2']}",
        "--computer", f"down={closed_address}", "--computer", f"hung={hung_address}",
        "--group", "desks", *policy_flags(tmp_path, source_tree),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    started = await backupctl(server.address, "start", "nightly")
    assert started.returncode == EXIT_SOME_NOT_RECEIVED, started.stderr
    rows = {line.split()[1]: line for line in started.stdout.splitlines() if line.startswith("│ ")}
    assert "received" in rows["a1"] and "job j-" in rows["a1"]
    assert "not received" in rows["down"] and "UNAVAILABLE" in rows["down"]
    assert "not received" in rows["hung"]
    assert "skipped" in rows["local"] and "desks" in rows["local"]
    assert (
        "start nightly: WARNING - 5 computers: 2 received, 2 not received, 1 skipped, "
        "0 rejected, 0 cancelled"
    ) in started.stdout
    assert "warning: computer 'local'" in started.stdout

    stopped = await backupctl(server.address, "stop", "nightly", "-o", "json")
    assert stopped.returncode == EXIT_SOME_NOT_RECEIVED, stopped.stderr
    assert '"computerResults"' in stopped.stdout and '"notReceived": 2' in stopped.stdout
    session = json_format.Parse(stopped.stdout, pb.PolicySession())
    assert session.action == pb.SESSION_ACTION_STOP
    deliveries = {r.computer.name: r.delivery for r in session.computer_results}
    assert deliveries == {
        "a1": pb.DELIVERY_RECEIVED,
        "a2": pb.DELIVERY_RECEIVED,
        "down": pb.DELIVERY_NOT_RECEIVED,
        "hung": pb.DELIVERY_NOT_RECEIVED,
        "local": pb.DELIVERY_SKIPPED,
    }


async def test_start_exits_0_when_every_targeted_computer_received_it(
    server: BackupServer, fleet: dict[str, str], tmp_path: Path, source_tree: Path
) -> None:
    """Skipped computers are not targeted: all others received it, so exit 0."""
    await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", f"a1={fleet['a1']}", "--group", "desks", *policy_flags(tmp_path, source_tree),
    )  # fmt: skip
    started = await backupctl(server.address, "start", "nightly", "-o", "json")
    assert started.returncode == 0, started.stderr
    session = json_format.Parse(started.stdout, pb.PolicySession())
    assert (session.statistics.received, session.statistics.skipped) == (1, 1)


async def test_sessions_session_and_jobs(
    server: BackupServer, fleet: dict[str, str], tmp_path: Path, source_tree: Path
) -> None:
    """Sessions list newest first; one session shows its table; an agent lists its jobs."""
    await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", f"a1={fleet['a1']}", *policy_flags(tmp_path, source_tree),
    )  # fmt: skip
    first = json.loads((await backupctl(server.address, "start", "nightly", "-o", "json")).stdout)
    second = json.loads((await backupctl(server.address, "stop", "nightly", "-o", "json")).stdout)

    listed = await backupctl(server.address, "sessions", "nightly", "-o", "json")
    sessions = json_format.Parse(listed.stdout, api.ListSessionsResponse()).sessions
    assert [s.id for s in sessions] == [second["id"], first["id"]]
    limited = await backupctl(server.address, "sessions", "--limit", "1")
    assert second["id"] in limited.stdout and first["id"] not in limited.stdout

    shown = await backupctl(server.address, "session", first["id"])
    assert shown.returncode == 0 and f"session {first['id']}" in shown.stdout
    assert "start nightly: SUCCESS - 1 computer: 1 received" in shown.stdout
    watched = await backupctl(server.address, "session", first["id"], "--watch", "-o", "json")
    assert (
        watched.returncode == 0 and json.loads(watched.stdout)["state"] == "SESSION_STATE_SUCCESS"
    )

    jobs = await backupctl(server.address, "jobs", fleet["a1"], "-o", "json")
    assert jobs.returncode == 0, jobs.stderr
    assert [job["sessionId"] for job in json.loads(jobs.stdout)["jobs"]] == [first["id"]]
    assert (
        first["computerResults"][0]["jobId"]
        in (await backupctl(server.address, "jobs", fleet["a1"])).stdout
    )


async def test_errors_are_one_line_with_code_message_and_field(
    server: BackupServer, closed_address: str, hung_address: str, tmp_path: Path
) -> None:
    """A down or hung server, bad input and unknown ids: exit 1, one line, never a traceback."""
    down = one_line_error(await backupctl(closed_address, "policy", "list"), "UNAVAILABLE")
    assert f"cannot reach the backup server at {closed_address}" in down
    one_line_error(await backupctl(closed_address, "start", "nightly"), "UNAVAILABLE")
    one_line_error(
        await backupctl(hung_address, "start", "nightly", "--timeout", "0.5"), "DEADLINE_EXCEEDED"
    )
    one_line_error(await backupctl(server.address, "start", "nightly"), "NOT_FOUND")
    one_line_error(await backupctl(server.address, "session", "s-none"), "NOT_FOUND")
    one_line_error(await backupctl(server.address, "jobs", closed_address), "UNAVAILABLE")

    bad_address = await backupctl(
        server.address, "policy", "create", "p", "--name", "P", "--computer", "x=no-port",
        "--source", "/srv", "--repository", "/backups",
    )  # fmt: skip
    line = one_line_error(bad_address, "INVALID_ARGUMENT")
    assert line.endswith("(field: policy.computers[0].address)"), line
    bad_id = one_line_error(await backupctl(server.address, "start", "Bad_Id"), "INVALID_ARGUMENT")
    assert bad_id.endswith("(field: policy_id)")

    for usage in (
        ["policy", "create", "p", "--computer", "no-equals-sign"],
        ["policy", "update", "p"],  # nothing to change
        ["policy", "create", "-f", str(tmp_path / "missing.yaml")],
        ["start"],
        ["no-such-command"],
        ["--server", "no-port", "policy", "list"],
    ):
        result = await backupctl(server.address, *usage)
        assert result.returncode == 1, (usage, result)
        assert "Traceback" not in result.stderr and "Error:" in result.stderr, usage


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs a command on a pseudo-terminal 120 columns wide; returns its exit code and output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


async def test_start_shows_live_progress_while_a_computer_hangs(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[[str], Awaitable[AgentServer]],
    slow_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """On a terminal the bar shows deliveries so far while a computer holds the fan-out."""
    server = await start_server(agent_deadline=1.5)
    live = await start_agent("a1")
    await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", f"a1={live.address}", "--computer", f"slow={slow_address}",
        *policy_flags(tmp_path, source_tree),
    )  # fmt: skip
    env = {**os.environ, "BACKUP_SERVER": server.address, "TERM": "xterm"}
    code, output = await asyncio.to_thread(run_in_terminal, [BACKUPCTL, "start", "nightly"], env)
    assert code == EXIT_SOME_NOT_RECEIVED, output
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # colours and cursor moves
    progress = output.find("1/2 1 received, 1 pending")
    assert progress >= 0, output
    assert progress < output.index("start nightly: WARNING - 2 computers: 1 received, 1 not")
    assert "DEADLINE_EXCEEDED" in output


async def test_shell_completion_asks_the_server_for_policy_ids(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """Completing `backupctl start n` offers the server's policies that start with n."""
    for policy_id in ("nightly", "weekly"):
        await backupctl(
            server.address, "policy", "create", policy_id, "--name", policy_id,
            "--computer", "db=127.0.0.1:50062", *policy_flags(tmp_path, source_tree),
        )  # fmt: skip
    env = {
        **os.environ,
        "BACKUP_SERVER": server.address,
        "_BACKUPCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": "backupctl start n",
        "COMP_CWORD": "2",
    }
    result = await asyncio.to_thread(
        subprocess.run, [BACKUPCTL], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.stdout.split() == ["plain,nightly"], result


def test_every_command_has_help_with_examples() -> None:
    """--help works on every command and shows examples; the bare command shows help too."""
    runner = CliRunner()
    commands = [[]] + [[name] for name in cli.commands]
    groups = {name: group for name, group in cli.commands.items() if isinstance(group, click.Group)}
    assert {"group", "policy", "certs"} <= set(groups)
    for group_name, group in groups.items():
        commands += [[group_name, name] for name in group.commands]
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        if command not in (["group"], ["policy"]):
            assert "Examples:" in result.output, command
    assert runner.invoke(cli, []).exit_code == 0
    script = runner.invoke(cli, ["completion", "bash"])
    assert script.exit_code == 0 and "_BACKUPCTL_COMPLETE" in script.output


def test_python_dash_m_runs_the_same_command() -> None:
    """`python -m backup.ctl` is backupctl."""
    result = subprocess.run(
        [sys.executable, "-m", "backup.ctl", "start", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and "Usage: backupctl start" in result.stdout
