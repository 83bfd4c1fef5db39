"""AgentControl on a real agent: jobs do real work, one per policy, stop promptly, survive restarts."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from disk_support import final_job_saves_fail

from agent_stub.app import AgentConfig, AgentServer
from agent_stub.store import read_policy
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, point_files, restore_points


def backup_policy(
    tmp_path: Path, source: Path, policy_id: str = "nightly", **fields: object
) -> pb.BackupPolicy:
    return pb.BackupPolicy(
        id=policy_id,
        name=policy_id,
        source_paths=[str(source)],
        repository=str(tmp_path / "repository"),
        **fields,  # type: ignore[arg-type]
    )


async def expect_code(call, code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    for word in words:
        assert word in raised.value.details()


async def test_a_job_backs_up_real_files_into_a_restore_point(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """StartJob answers at once with a RUNNING job that ends SUCCEEDED with a restore point holding the files."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    reply = await control.StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=backup_policy(tmp_path, source_tree))
    )
    assert not reply.already_running
    assert reply.job.state == pb.JOB_STATE_RUNNING and reply.job.session_id == "s-1"
    job = await job_ends(control, reply.job.id)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.error == ""
    assert job.files_done == 3 and job.bytes_done == job.bytes_total == 6 + 64 * 1024
    assert restore_points(tmp_path / "repository") == [job.restore_point_id]
    stored = point_files(tmp_path / "repository", job.restore_point_id)
    originals = {str(p).lstrip("/"): p.read_bytes() for p in source_tree.rglob("*") if p.is_file()}
    assert stored == originals


async def test_one_job_per_policy(start_agent, agent_control, tmp_path, source_tree) -> None:
    """A start while the policy's job runs returns that job with already_running; another policy starts its own."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    (source_tree / "big.bin").write_bytes(b"z" * 300_000)
    slow = backup_policy(tmp_path, source_tree, throttle_bytes_per_second=200_000)
    first = await control.StartJob(agent_api.StartJobRequest(policy=slow))
    again = await control.StartJob(agent_api.StartJobRequest(policy=slow))
    assert again.already_running and again.job.id == first.job.id
    other = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree, "weekly"))
    )
    assert not other.already_running and other.job.id != first.job.id
    stop = await control.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    assert stop.was_running and stop.job.id == first.job.id


async def test_stop_with_nothing_running_is_fine(start_agent, agent_control) -> None:
    """StopJob for a policy with no running job answers was_running = false and an empty job."""
    agent = await start_agent("a1")
    reply = await agent_control(agent.address).StopJob(
        agent_api.StopJobRequest(policy_id="nightly")
    )
    assert not reply.was_running and reply.job == pb.Job()


async def test_stop_reaches_stopped_within_a_second(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """StopJob answers at once and the job is STOPPED within a second, leaving no restore point."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    (source_tree / "big.bin").write_bytes(b"z" * 1_000_000)
    started = await control.StartJob(
        agent_api.StartJobRequest(
            policy=backup_policy(tmp_path, source_tree, throttle_bytes_per_second=100_000)
        )
    )
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    reply = await control.StopJob(agent_api.StopJobRequest(session_id="s-2", policy_id="nightly"))
    assert time.monotonic() - asked < 0.5 and reply.was_running
    job = await job_ends(control, started.job.id, seconds=2)
    assert time.monotonic() - asked < 1.0
    assert job.state == pb.JOB_STATE_STOPPED and job.restore_point_id == ""
    assert restore_points(tmp_path / "repository") == []
    assert not list((tmp_path / "repository" / "tmp").glob("*")), "partial data left behind"


async def test_throttle_limits_the_rate(start_agent, agent_control, tmp_path) -> None:
    """A job limited to 400 kB/s takes at least about the time its bytes need at that rate."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(b"t" * 600_000)
    began = time.monotonic()
    reply = await control.StartJob(
        agent_api.StartJobRequest(
            policy=backup_policy(tmp_path, source, throttle_bytes_per_second=400_000)
        )
    )
    job = await job_ends(control, reply.job.id)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert time.monotonic() - began >= 1.2


async def test_a_missing_source_fails_the_job_clearly(start_agent, agent_control, tmp_path) -> None:
    """A source path that does not exist fails the job with an error naming it, and no restore point."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    reply = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, tmp_path / "absent"))
    )
    job = await job_ends(control, reply.job.id)
    assert (
        job.state == pb.JOB_STATE_FAILED and "absent" in job.error and "does not exist" in job.error
    )
    assert job.restore_point_id == "" and restore_points(tmp_path / "repository") == []


async def test_jobs_list_newest_first_and_get_by_id(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """ListJobs is newest first and filters by policy; GetJob finds each; unknown ids are NOT_FOUND."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    ids = []
    for policy_id in ("alpha", "beta", "alpha"):
        reply = await control.StartJob(
            agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree, policy_id))
        )
        await job_ends(control, reply.job.id)
        ids.append(reply.job.id)
    listed = await control.ListJobs(agent_api.ListJobsRequest())
    assert [job.id for job in listed.jobs] == list(reversed(ids))
    alpha = await control.ListJobs(agent_api.ListJobsRequest(policy_id="alpha"))
    assert [job.id for job in alpha.jobs] == [ids[2], ids[0]]
    assert (await control.GetJob(agent_api.GetJobRequest(job_id=ids[1]))).policy_id == "beta"
    await expect_code(
        control.GetJob(agent_api.GetJobRequest(job_id="j-unknown")), grpc.StatusCode.NOT_FOUND
    )


BAD_REQUESTS = [
    (
        "StartJob",
        agent_api.StartJobRequest(
            policy=pb.BackupPolicy(
                id="p", source_paths=["/a"], repository="/r", retention_points=-5
            )
        ),
        "policy.retention_points",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(
            policy=pb.BackupPolicy(
                id="p", source_paths=["/a"], repository="/r", throttle_bytes_per_second=-1
            )
        ),
        "policy.throttle_bytes_per_second",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(policy=pb.BackupPolicy(source_paths=["/a"], repository="/r")),
        "policy.id",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(policy=pb.BackupPolicy(id="p", repository="/r")),
        "policy.source_paths",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(
            policy=pb.BackupPolicy(id="p", source_paths=["rel"], repository="/r")
        ),
        "policy.source_paths[0]",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(policy=pb.BackupPolicy(id="p", source_paths=["/a"])),
        "policy.repository",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(
            policy=pb.BackupPolicy(id="p", source_paths=["/a"], repository="/a/r")
        ),
        "policy.repository",
    ),
    (
        "StartJob",
        agent_api.StartJobRequest(
            session_id="BAD ID",
            policy=pb.BackupPolicy(id="p", source_paths=["/a"], repository="/r"),
        ),
        "session_id",
    ),
    ("StopJob", agent_api.StopJobRequest(), "policy_id"),
    ("GetJob", agent_api.GetJobRequest(job_id="Nope!"), "job_id"),
    ("ListJobs", agent_api.ListJobsRequest(policy_id="X"), "policy_id"),
]


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    BAD_REQUESTS,
    ids=[f"{r}-{f}-{i}" for i, (r, _, f) in enumerate(BAD_REQUESTS)],
)
async def test_bad_requests_are_invalid_argument(
    start_agent, agent_control, rpc, request_, field
) -> None:
    """The agent does not trust its caller: malformed requests are INVALID_ARGUMENT naming the field."""
    agent = await start_agent("a1")
    await expect_code(
        getattr(agent_control(agent.address), rpc)(request_),
        grpc.StatusCode.INVALID_ARGUMENT,
        field,
    )
    assert agent.jobs.list("") == []


async def test_jobs_and_policies_survive_a_restart(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """After a restart the agent lists the same jobs and still has the policy it last received."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    reply = await control.StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=backup_policy(tmp_path, source_tree))
    )
    before = await job_ends(control, reply.job.id)
    await agent.stop()
    again = AgentServer(AgentConfig("127.0.0.1:0", "a1", agent.config.data_dir))
    await again.start()
    try:
        listed = await agent_control(again.address).ListJobs(agent_api.ListJobsRequest())
        assert list(listed.jobs) == [before]
        assert read_policy(again.jobs._store.data_dir, "nightly") is not None
    finally:
        await again.stop()


async def test_a_job_running_when_the_agent_died_shows_failed(
    spawn, tmp_path, source_tree, agent_control
) -> None:
    """kill -9 during a job: after restart the job is FAILED, and no partial restore point exists."""
    data_dir = tmp_path / "agent"
    (source_tree / "big.bin").write_bytes(b"k" * 1_000_000)
    process = spawn(
        "agent_stub", "--listen", "127.0.0.1:0", "--name", "a1", "--data-dir", str(data_dir)
    )
    control = agent_control(process.address)
    reply = await control.StartJob(
        agent_api.StartJobRequest(
            policy=backup_policy(tmp_path, source_tree, throttle_bytes_per_second=200_000)
        )
    )
    await asyncio.sleep(0.5)
    process.popen.send_signal(signal.SIGKILL)
    process.popen.wait()
    restarted = spawn(
        "agent_stub", "--listen", "127.0.0.1:0", "--name", "a1", "--data-dir", str(data_dir)
    )
    job = await agent_control(restarted.address).GetJob(
        agent_api.GetJobRequest(job_id=reply.job.id)
    )
    assert job.state == pb.JOB_STATE_FAILED and "stopped while this job was running" in job.error
    assert restore_points(tmp_path / "repository") == []
    assert not list((tmp_path / "repository" / "tmp").glob("*"))


def agent_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_stub", *args], capture_output=True, text=True, timeout=30
    )


async def test_run_on_the_agent_itself(start_agent, agent_control, tmp_path, source_tree) -> None:
    """`backup-agent run` starts a job from the last received policy; it lists with no session id."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    first = await control.StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=backup_policy(tmp_path, source_tree))
    )
    await job_ends(control, first.job.id)
    result = await asyncio.to_thread(
        agent_command, "run", "nightly", "--data-dir", str(agent.config.data_dir)
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    job = await job_ends(control, job_id)
    assert (
        job.session_id == "" and job.policy_id == "nightly" and job.state == pb.JOB_STATE_SUCCEEDED
    )
    listed = await control.ListJobs(agent_api.ListJobsRequest(policy_id="nightly"))
    assert [j.id for j in listed.jobs] == [job_id, first.job.id]


async def test_run_refuses_unknown_policy_and_missing_agent(start_agent, tmp_path) -> None:
    """`run` exits 1 with one clear line for a policy never received, and when no agent serves the dir."""
    agent = await start_agent("a1")
    result = await asyncio.to_thread(
        agent_command, "run", "nightly", "--data-dir", str(agent.config.data_dir)
    )
    assert result.returncode == 1 and "never received" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = await asyncio.to_thread(
        agent_command, "run", "../agent", "--data-dir", str(agent.config.data_dir)
    )
    assert result.returncode == 1 and "is not a policy id" in result.stderr
    assert "Traceback" not in result.stderr
    result = await asyncio.to_thread(
        agent_command, "run", "nightly", "--data-dir", str(tmp_path / "nowhere")
    )
    assert result.returncode == 1 and "no agent is serving" in result.stderr
    assert "Traceback" not in result.stderr


async def test_two_agents_cannot_share_a_data_dir(start_agent, tmp_path) -> None:
    """A second agent on the same data dir refuses to start instead of corrupting the first's state."""
    agent = await start_agent("a1")
    second = AgentServer(AgentConfig("127.0.0.1:0", "a2", agent.config.data_dir))
    with pytest.raises(SystemExit, match="another agent"):
        await second.start()


async def test_a_full_disk_at_start_is_internal_not_unknown(
    start_agent, agent_control, tmp_path, source_tree, monkeypatch
) -> None:
    """When the agent cannot record the job (a full disk), StartJob says so as INTERNAL, and nothing runs."""
    agent = await start_agent("a1")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent.jobs._store, "save_job", disk_full)
    await expect_code(
        agent_control(agent.address).StartJob(
            agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree))
        ),
        grpc.StatusCode.INTERNAL,
        "No space left on device",
    )
    assert agent.jobs.list("") == []


async def test_a_record_that_cannot_be_saved_does_not_block_the_policy(
    start_agent, agent_control, tmp_path, source_tree, monkeypatch
) -> None:
    """If a finished job's record cannot be written, the policy is free again: the next start runs a new job."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    store = agent.jobs._store
    original = final_job_saves_fail(store, monkeypatch)
    first = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree))
    )
    await job_ends(control, first.job.id)
    monkeypatch.setattr(store, "save_job", original)
    second = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree))
    )
    assert not second.already_running and second.job.id != first.job.id
