"""The agent's command line as an operator meets it: help, version, ls, restore's dry run
and refusal to overwrite, and a shutdown mid-job recorded as such."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from engine_support import MIB, cli, policy, restored_source, write

from agent_stub.app import AgentServer
from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub

from conftest import job_ends


@pytest.fixture
async def backed_up(start_agent, tmp_path: Path) -> tuple[AgentServer, Path, str]:
    """An agent that made one restore point of a small tree: (agent, source, point id)."""
    agent = await start_agent("a1")
    source = tmp_path / "source"
    write(source / "docs" / "report.txt", b"quarterly figures\n")
    write(source / "docs" / "data.bin", bytes(range(256)) * 4096)
    write(source / "top.txt", b"top\n")
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        reply = await stub.StartJob(
            api.StartJobRequest(policy=policy(source, tmp_path / "repository")), timeout=5
        )
        job = await job_ends(stub, reply.job.id, seconds=30)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job
    return agent, source, job.restore_point_id


def test_help_shows_serving_options_and_lists_the_commands() -> None:
    """`backup-agent --help` shows --listen and the TLS flags, and names every subcommand."""
    shown = cli("--help")
    assert shown.returncode == 0, shown.stderr
    for text in ("--listen", "--tls-cert", "--allow-path", "run POLICY_ID", "points", "ls POINT_ID"):
        assert text in shown.stdout
    assert "restore POINT_ID" in shown.stdout and "verify [POINT_ID]" in shown.stdout


@pytest.mark.parametrize("program", ["backup-agent", "backup-server", "backupctl"])
def test_version_is_name_and_version_on_one_line(program: str) -> None:
    """Every command's --version prints `NAME VERSION` on one line and exits 0."""
    binary = str(Path(sys.executable).with_name(program))
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == program and len(lines[0].split()) == 2
    assert lines[0].split()[1][0].isdigit(), lines


async def test_ls_lists_a_points_files_with_their_sizes(backed_up, tmp_path: Path) -> None:
    """`ls POINT` lists every entry with mode, human size and zoned time; `ls POINT PATH` only below PATH."""
    agent, source, point_id = backed_up
    data_dir = str(agent.config.data_dir)
    listed = await asyncio.to_thread(cli, "ls", point_id, "--data-dir", data_dir)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    data = next(line for line in lines if line.endswith("docs/data.bin"))
    assert data.startswith("-rw-") and "1.0 MiB" in data and " UTC " in f" {data} "
    assert any(line.startswith("d") and line.endswith("/docs") for line in lines)
    docs = str(source / "docs").lstrip("/")
    below = await asyncio.to_thread(cli, "ls", point_id, docs, "--data-dir", data_dir)
    assert below.returncode == 0, below.stderr
    assert not any(line.endswith("top.txt") for line in below.stdout.splitlines())
    assert any(line.endswith("report.txt") for line in below.stdout.splitlines())


async def test_restore_dry_run_writes_nothing(backed_up, tmp_path: Path) -> None:
    """--dry-run says what it would write and how much, and the target stays absent."""
    agent, source, point_id = backed_up
    target = tmp_path / "target"
    dry = await asyncio.to_thread(
        cli, "restore", point_id, "--to", str(target), "--dry-run",
        "--data-dir", str(agent.config.data_dir),
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"would restore {restored_source(target, source) / 'top.txt'}" in dry.stdout
    assert "would restore 3 files (1.0 MiB)" in dry.stdout and "0 existing files" in dry.stdout
    assert not target.exists()


async def test_restore_refuses_to_overwrite_unless_told(backed_up, tmp_path: Path) -> None:
    """A file already in the target stops the restore (exit 1, one line, file untouched);
    --overwrite replaces it with the backed-up content."""
    agent, source, point_id = backed_up
    target = tmp_path / "target"
    existing = write(restored_source(target, source) / "top.txt", b"newer, local\n")
    args = ["restore", point_id, "--to", str(target), "--data-dir", str(agent.config.data_dir)]
    refused = await asyncio.to_thread(cli, *args)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "1 file already in" in refused.stderr and "--overwrite" in refused.stderr
    assert existing.read_bytes() == b"newer, local\n"
    assert not (restored_source(target, source) / "docs").exists()
    dry = await asyncio.to_thread(cli, *args, "--dry-run")
    assert "top.txt (replaces an existing one)" in dry.stdout and "1 existing file in" in dry.stdout
    replaced = await asyncio.to_thread(cli, *args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "restored 3 files" in replaced.stdout
    assert existing.read_bytes() == b"top\n"
    restored = restored_source(target, source) / "docs" / "data.bin"
    assert restored.read_bytes() == (source / "docs" / "data.bin").read_bytes()


async def test_shutdown_mid_job_is_recorded_as_a_shutdown(start_agent, tmp_path: Path) -> None:
    """An agent stopped while a job runs records the job STOPPED because the agent shut down,
    not as stopped on request."""
    agent = await start_agent("a1")
    source = tmp_path / "source"
    write(source / "big.bin", bytes(8 * MIB))
    slow = policy(source, tmp_path / "repository", throttle_bytes_per_second=MIB)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        reply = await AgentControlStub(channel).StartJob(api.StartJobRequest(policy=slow), timeout=5)
    await agent.stop()
    record = json.loads((agent.config.data_dir / "jobs" / f"{reply.job.id}.json").read_text())
    assert record["state"] == "JOB_STATE_STOPPED"
    assert "agent shut down" in record["error"] and "on request" not in record["error"]
