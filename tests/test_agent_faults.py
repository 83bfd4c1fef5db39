"""A real agent meeting faults: missing sources, unreadable files, a full disk, a stop."""

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from engine_support import MIB, chunk_files, policy, start_agent_process, write
from test_agent_points import DEADLINE, run_job

from agent_stub import engine
from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub

from conftest import job_ends, wait_for


async def list_points(stub, policy_id: str = "") -> list[str]:
    reply = await stub.ListRestorePoints(
        api.ListRestorePointsRequest(policy_id=policy_id), timeout=DEADLINE
    )
    return [point.id for point in reply.restore_points]


async def test_missing_source_path_fails_the_job(start_agent, tmp_path: Path) -> None:
    """A source path that does not exist fails the job with an error naming it."""
    agent = await start_agent("a1")
    async with grpc.aio.insecure_channel(agent.address) as channel:
        job = await run_job(AgentControlStub(channel), policy(tmp_path / "gone", tmp_path / "repo"))
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error == f"source path {tmp_path / 'gone'} does not exist"
    assert not job.restore_point_id


@pytest.fixture
def bound_by_permissions() -> list[str]:
    """A command prefix under which file permissions bind the agent. Root reads any file,
    so as root the agent runs without the capabilities that let it (via setpriv)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file_is_skipped_with_a_warning(
    tmp_path: Path, bound_by_permissions: list[str]
) -> None:
    """The job succeeds with a warning naming the file it could not read; the rest is kept."""
    source = tmp_path / "source"
    write(source / "readable", b"fine\n")
    secret = write(source / "secret", b"not for the agent\n", mode=0o000)
    agent = start_agent_process(tmp_path / "agent", prefix=bound_by_permissions)
    try:
        with grpc.insecure_channel(agent.address) as channel:
            reply = AgentControlStub(channel).StartJob(
                api.StartJobRequest(policy=policy(source, tmp_path / "repository")),
                timeout=DEADLINE,
            )
        job = asyncio.run(_poll(agent.address, reply.job.id))
    finally:
        agent.stop()
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert list(job.warnings) == [f"skipped {secret}: Permission denied"]
    assert job.files_done == 1 and job.restore_point_id


async def _poll(address: str, job_id: str) -> pb.Job:
    async with grpc.aio.insecure_channel(address) as channel:
        return await job_ends(AgentControlStub(channel), job_id)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system (tmpfs), to fill up for real."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


async def test_full_disk_fails_the_job_and_keeps_earlier_points(
    start_agent, tmp_path: Path, small_disk: Path
) -> None:
    """Out of space, the job fails and removes what it wrote; earlier points still verify."""
    agent = await start_agent("a1")
    source = tmp_path / "source"
    write(source / "small", os.urandom(MIB))
    repository = small_disk / "repository"
    backup_policy = policy(source, repository)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        first = await run_job(stub, backup_policy)
        assert first.state == pb.JOB_STATE_SUCCEEDED
        kept = chunk_files(repository)
        write(source / "too-big", os.urandom(12 * MIB))
        failed = await run_job(stub, backup_policy)
        assert failed.state == pb.JOB_STATE_FAILED
        assert (
            failed.error == f"cannot write to the repository {repository}: No space left on device"
        )
        assert await list_points(stub) == [first.restore_point_id]
        assert chunk_files(repository) == kept
        assert list((repository / "tmp").iterdir()) == []
        assert engine.verify(engine.Repository.open(repository)).problems == []
        (source / "too-big").unlink()
        again = await run_job(stub, backup_policy)
    assert again.state == pb.JOB_STATE_SUCCEEDED


async def test_stop_takes_effect_within_a_second_inside_a_large_file(
    start_agent, tmp_path: Path
) -> None:
    """A stop in the middle of a 64 GiB file ends the job within a second, with no point."""
    agent = await start_agent("a1")
    source = tmp_path / "source"
    source.mkdir()
    huge = source / "huge"
    huge.touch()
    os.truncate(huge, 64 * 1024 * MIB)  # sparse: takes no disk, reads as zeros
    backup_policy = policy(source, tmp_path / "repository")
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        started = await stub.StartJob(api.StartJobRequest(policy=backup_policy), timeout=DEADLINE)

        async def reading() -> bool:
            job = await stub.GetJob(api.GetJobRequest(job_id=started.job.id), timeout=DEADLINE)
            return job.bytes_read > 32 * MIB

        await wait_for(reading, 20.0)
        asked = loop.time()
        stop = await stub.StopJob(api.StopJobRequest(policy_id="nightly"), timeout=DEADLINE)
        assert stop.was_running
        job = await job_ends(stub, started.job.id)
        took = loop.time() - asked
        assert job.state == pb.JOB_STATE_STOPPED
        assert took < 1.0, f"the stop took {took:.2f} s"
        assert 0 < job.bytes_read < 64 * 1024 * MIB
        assert job.bytes_total == 64 * 1024 * MIB
        assert await list_points(stub) == []
    assert list((tmp_path / "repository" / "tmp").iterdir()) == []


async def test_progress_is_reported_while_a_throttled_job_runs(start_agent, tmp_path: Path) -> None:
    """A running job's bytes_done and bytes_read grow toward bytes_total as it reads."""
    agent = await start_agent("a1")
    write(tmp_path / "source" / "file", os.urandom(8 * MIB))
    throttled = policy(
        tmp_path / "source", tmp_path / "repository", throttle_bytes_per_second=4 * MIB
    )
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        started = await stub.StartJob(api.StartJobRequest(policy=throttled), timeout=DEADLINE)
        request = api.GetJobRequest(job_id=started.job.id)
        seen: list[pb.Job] = []

        async def reading() -> bool:
            seen.append(await stub.GetJob(request, timeout=DEADLINE))
            return seen[-1].bytes_read > 0

        await wait_for(reading)
        await stub.StopJob(api.StopJobRequest(policy_id="nightly"), timeout=DEADLINE)
        stopped = await job_ends(stub, started.job.id, seconds=1.0)
    running = seen[-1]
    assert running.state == pb.JOB_STATE_RUNNING
    assert running.bytes_total == 8 * MIB
    assert 0 < running.bytes_read <= running.bytes_done < running.bytes_total
    assert stopped.state == pb.JOB_STATE_STOPPED and not stopped.restore_point_id
