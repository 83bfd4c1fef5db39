"""backupctl's schedule, window and retry flags, pause and resume, against a live server."""

import json
from pathlib import Path

from cli_support import backupctl, one_line_error

from backup_server.app import BackupServer


async def test_policy_create_with_schedule_then_pause_resume_and_update(server: BackupServer, tmp_path: Path, source_tree: Path) -> None:
    """--schedule/--time-zone/--window/--retries/--retry-interval are stored; show and list print them and the next run; pause and resume flip it."""
    address = server.address
    created = await backupctl(
        address, "policy", "create", "nightly", "--name", "Nightly", "--computer", "db=127.0.0.1:1",
        "--source", str(source_tree), "--repository", str(tmp_path / "repo"),
        "--schedule", "0 2 * * *", "--time-zone", "Europe/Berlin", "--window", "22:00-06:00",
        "--retries", "3", "--retry-interval", "10m", "-o", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    policy = json.loads(created.stdout)
    assert policy["schedule"] == {"cron": "0 2 * * *", "timeZone": "Europe/Berlin", "paused": False}
    assert policy["backupWindow"] == {"start": "22:00", "end": "06:00", "timeZone": "Europe/Berlin"}
    assert policy["retry"] == {"attempts": 3, "interval": "600s"}
    assert policy["nextRunTime"]
    shown = await backupctl(address, "policy", "show", "nightly")
    assert "0 2 * * * (Europe/Berlin)" in shown.stdout
    assert "22:00-06:00 (Europe/Berlin)" in shown.stdout
    assert "3 times, 600 s apart" in shown.stdout and "next run" in shown.stdout
    listed = await backupctl(address, "policy", "list")
    assert "0 2 * * * (Europe/Berlin)" in listed.stdout and "next run" in listed.stdout

    paused = await backupctl(address, "policy", "pause", "nightly")
    assert paused.returncode == 0 and "paused policy nightly" in paused.stdout
    shown = json.loads((await backupctl(address, "policy", "show", "nightly", "-o", "json")).stdout)
    assert shown["schedule"]["paused"] is True and "nextRunTime" not in shown or not shown.get("nextRunTime")
    resumed = await backupctl(address, "policy", "resume", "nightly")
    assert resumed.returncode == 0 and "next run" in resumed.stdout

    updated = await backupctl(address, "policy", "update", "nightly", "--retries", "5", "-o", "json")
    after = json.loads(updated.stdout)
    assert after["retry"] == {"attempts": 5, "interval": "600s"}
    assert after["schedule"]["cron"] == "0 2 * * *"


async def test_bad_schedule_flags_are_one_line_errors_naming_the_field(server: BackupServer, tmp_path: Path, source_tree: Path) -> None:
    """A bad cron, zone or window is refused by the server with the field path; a malformed flag by backupctl itself."""
    base = [
        "policy", "create", "p", "--name", "P", "--computer", "db=127.0.0.1:1",
        "--source", str(source_tree), "--repository", str(tmp_path / "repo"),
    ]  # fmt: skip
    bad_cron = await backupctl(server.address, *base, "--schedule", "0 25 * * *")
    assert "policy.schedule.cron" in one_line_error(bad_cron, "")
    bad_zone = await backupctl(server.address, *base, "--schedule", "0 2 * * *", "--time-zone", "Moon/Base")
    assert "policy.schedule.time_zone" in one_line_error(bad_zone, "")
    empty = await backupctl(server.address, *base, "--window", "06:00-06:00")
    assert "policy.backup_window.end" in one_line_error(empty, "")
    malformed = await backupctl(server.address, *base, "--window", "six-to-ten")
    assert malformed.returncode == 1 and "HH:MM-HH:MM" in malformed.stderr
    listed = await backupctl(server.address, "policy", "list", "-o", "json")
    assert json.loads(listed.stdout).get("policies", []) == []


async def test_start_one_computer_and_sessions_show_trigger_and_attempt(server: BackupServer, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """start --computer sends to that computer only; sessions has trigger and attempt columns; an unknown --computer is one line naming computer_names."""
    agent = await start_agent("a1")
    address = server.address
    created = await backupctl(
        address, "policy", "create", "nightly", "--name", "Nightly", "--computer", f"a1={agent.address}",
        "--computer", f"gone={closed_address}", "--source", str(source_tree), "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    started = await backupctl(address, "start", "nightly", "--computer", "a1", "-o", "json")
    assert started.returncode == 0, started.stderr
    session = json.loads(started.stdout)
    assert [r["computer"]["name"] for r in session["computerResults"]] == ["a1"]
    assert session["trigger"] == "SESSION_TRIGGER_OPERATOR" and session["attempt"] == 0
    table = await backupctl(address, "sessions", "nightly")
    header = table.stdout.splitlines()[1]
    assert "trigger" in header and "attempt" in header
    assert "operator" in table.stdout
    unknown = await backupctl(address, "start", "nightly", "--computer", "nobody")
    assert "computer_names[0]" in one_line_error(unknown, "")
