"""backupctl's outputs: -o yaml and -o wide beside text and json, human units, sizes in -f FILE."""

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from cli_support import backupctl

from agent_stub.app import AgentServer
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer


async def test_sizes_with_units_in_a_file_and_human_policy_show(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """`throttleBytesPerSecond: 5MiB` in -f FILE means what --throttle 5MiB means; show reads
    it back in units and exact bytes, with plurals and zoned times; a bad size names its key."""
    created = tmp_path / "nightly.yaml"
    created.write_text(
        "name: Nightly\ncomputers:\n  - {name: db, address: '127.0.0.1:50062'}\n"
        f"sourcePaths: ['{source_tree}']\nrepository: {tmp_path / 'repository'}\n"
        "throttleBytesPerSecond: 5MiB\nretentionPoints: 1\n"
    )
    made = await backupctl(
        server.address, "policy", "create", "nightly", "-f", str(created), env={"TZ": "UTC"}
    )
    assert made.returncode == 0, made.stderr
    assert "5.0 MiB/s (5242880 bytes/s)" in made.stdout
    assert re.search(r"^retention +1 restore point *$", made.stdout, re.MULTILINE)
    assert re.search(r"^created +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", made.stdout, re.MULTILINE)
    shown = await backupctl(server.address, "policy", "show", "nightly", "-o", "json")
    assert json.loads(shown.stdout)["throttleBytesPerSecond"] == "5242880"
    bad = tmp_path / "bad.yaml"
    bad.write_text("throttle_bytes_per_second: 5 parsecs\n")
    refused = await backupctl(server.address, "policy", "update", "nightly", "-f", str(bad))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "throttle_bytes_per_second: expected a number of bytes" in refused.stderr
    grouped = await backupctl(
        server.address, "group", "create", "lab", "--name", "Lab", "--computer", "ws=127.0.0.1:1"
    )
    assert "\n1 computer:\n" in grouped.stdout, grouped.stdout


async def test_yaml_is_the_json_document_with_defaults_in_field_order(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """-o yaml and -o json print the same document: every field, defaults included, keys in
    the proto's field order, so scripts need no fallbacks and diffs stay small."""
    await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly", "--computer",
        "db=127.0.0.1:50062", "--source", str(source_tree), "--repository", str(tmp_path / "r"),
    )  # fmt: skip
    as_json = json.loads(
        (await backupctl(server.address, "policy", "show", "nightly", "-o", "json")).stdout
    )
    as_yaml = yaml.safe_load(
        (await backupctl(server.address, "policy", "show", "nightly", "-o", "yaml")).stdout
    )
    assert as_yaml == as_json and list(as_yaml) == list(as_json)
    assert as_json["description"] == "" and as_json["retentionPoints"] == 0
    field_order = [field.json_name for field in pb.BackupPolicy.DESCRIPTOR.fields]
    assert list(as_json) == [name for name in field_order if name in as_json]
    # Only unset message fields (times, schedule, window) are absent: they have presence.
    singular_messages = {
        field.json_name
        for field in pb.BackupPolicy.DESCRIPTOR.fields
        if field.message_type is not None and not field.is_repeated
    }
    assert set(field_order) - set(as_json) <= singular_messages


async def test_wide_shows_every_column_and_text_fits_100_columns(
    server: BackupServer,
    start_agent: Callable[[str], Awaitable[AgentServer]],
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """A session in text fits 100 columns with ids whole; -o wide adds latency and job id;
    sessions -o wide adds a column per count."""
    agent = await start_agent("a1")
    await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly", "--computer",
        f"desktop-with-a-long-name={agent.address}", "--source", str(source_tree),
        "--repository", str(tmp_path / "r"),
    )  # fmt: skip
    started = await backupctl(server.address, "start", "nightly", "-o", "json")
    session = json.loads(started.stdout)
    job_id = session["computerResults"][0]["jobId"]
    text = await backupctl(server.address, "session", session["id"], env={"COLUMNS": "100"})
    assert all(len(line) <= 100 for line in text.stdout.splitlines()), text.stdout
    assert job_id in text.stdout and agent.address in text.stdout
    assert "latency" not in text.stdout and "…" not in text.stdout
    wide = await backupctl(server.address, "session", session["id"], "-o", "wide")
    header = next(line for line in wide.stdout.splitlines() if "computer" in line)
    assert "latency" in header and "job id" in header
    listed = await backupctl(server.address, "sessions", "-o", "wide")
    assert "not received" in listed.stdout and "took" in listed.stdout
    jobs = await backupctl(server.address, "jobs", agent.address, "-o", "wide")
    assert "session" in jobs.stdout and session["id"] in jobs.stdout
