"""Confinement holds on what is opened, not only on names: a directory swapped for a symlink while a job runs, a file replaced under it, a source root or repository that leads outside by the time the job opens it."""

import asyncio
import os

import pytest
from engine_support import policy, write

from agent_stub import engine
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, point_files

SECRET = b"root:$6$the-real-shadow-file\n"
THROTTLE = 32 * 1024  # bytes per second: the first file takes about two seconds
FIRST = 64 * 1024


@pytest.fixture
def tree(tmp_path):
    """An allowed root whose source reads a slow first file, then b/victim; a secret outside holding a file of the same name."""
    allowed = tmp_path / "allowed"
    source = allowed / "source"
    write(source / "a" / "first.bin", os.urandom(FIRST))
    write(source / "b" / "victim", b"the victim's own data\n")
    secret = tmp_path / "secret"
    write(secret / "victim", SECRET)
    return allowed, source, secret


async def reading_started(control, job_id: str) -> None:
    """Waits until the job is reading its first (throttled) file, long after the scan."""
    for _ in range(500):
        job = await control.GetJob(agent_api.GetJobRequest(job_id=job_id))
        if job.bytes_read > 0:
            assert job.bytes_read < FIRST, "the first file was read before the swap"
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the job never started reading")


async def run_with_swap(start_agent, agent_control, allowed, source, swap) -> tuple[pb.Job, dict]:
    agent = await start_agent("web-1", allow_paths=(allowed,))
    control = agent_control(agent.address)
    backup_policy = policy(source, allowed / "repository", throttle_bytes_per_second=THROTTLE)
    reply = await control.StartJob(agent_api.StartJobRequest(policy=backup_policy))
    await reading_started(control, reply.job.id)
    swap()
    job = await job_ends(control, reply.job.id, seconds=30)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    return job, point_files(allowed / "repository", job.restore_point_id)


async def test_a_directory_swapped_for_a_symlink_is_not_followed(
    start_agent, agent_control, tree
) -> None:
    """b/ replaced by a symlink to a secret directory while the job is throttled: the secret is not in the restore point, and the job warns that b/victim was skipped."""
    allowed, source, secret = tree

    def swap() -> None:
        (source / "b").rename(source / "b.orig")
        (source / "b").symlink_to(secret)

    job, files = await run_with_swap(start_agent, agent_control, allowed, source, swap)
    assert SECRET not in files.values()
    victim = str(source / "b" / "victim").lstrip("/")
    assert victim not in files
    assert any(
        "b/victim" in warning and "path changed while the job ran" in warning
        for warning in job.warnings
    ), job.warnings
    assert str(source / "a" / "first.bin").lstrip("/") in files


async def test_a_file_replaced_after_the_scan_is_skipped(start_agent, agent_control, tree) -> None:
    """b/victim replaced by another file (a hard link to the secret) after the scan: its device and inode differ from what the scan saw, so it is skipped with a warning."""
    allowed, source, secret = tree

    def swap() -> None:
        os.unlink(source / "b" / "victim")
        os.link(secret / "victim", source / "b" / "victim")

    job, files = await run_with_swap(start_agent, agent_control, allowed, source, swap)
    assert SECRET not in files.values()
    assert any("b/victim" in w and "was replaced" in w for w in job.warnings), job.warnings


def run_engine(backup_policy: pb.BackupPolicy, allowed_roots: list[str]) -> tuple[str, pb.Job]:
    job = RunningJob(pb.Job(id="j-race", policy_id=backup_policy.id))
    spec = backup_job(backup_policy, allowed_roots=tuple(allowed_roots))
    return engine.run_backup(spec, job.id, job), job.snapshot()


def test_a_source_root_leading_outside_when_opened_is_skipped(tree) -> None:
    """A source that resolves outside the allowed roots when the job opens it (swapped after StartJob's check) is skipped with a warning; nothing of it is stored."""
    allowed, source, secret = tree
    (allowed / "later").symlink_to(secret)
    point_id, job = run_engine(
        policy([source, allowed / "later"], allowed / "repository"), [str(allowed)]
    )
    files = point_files(allowed / "repository", point_id)
    assert SECRET not in files.values()
    assert any("outside the paths this agent allows" in w for w in job.warnings), job.warnings


def test_a_repository_leading_outside_when_opened_fails_the_job(tree, tmp_path) -> None:
    """A repository path that resolves outside the allowed roots when the job starts fails the job and writes nothing there."""
    allowed, source, secret = tree
    (allowed / "repo-link").symlink_to(secret)
    with pytest.raises(engine.BackupFailed, match="outside the paths this agent allows"):
        run_engine(policy(source, allowed / "repo-link" / "repository"), [str(allowed)])
    assert sorted(os.listdir(secret)) == ["victim"]
