"""The server's following (backup_server.following) against real agents: ends, breaks, lost agents, reconciliation."""

import asyncio
import signal
from pathlib import Path

import pytest
from test_agent import backup_policy

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb
from backup_server import following
from backup_server.following import Follower, JobKey, check_lost_after
from backup_server.transport import GrpcAgentTransport

from conftest import stable_port, wait_for

KEY = JobKey("s-1", 0)


class Recording:
    """A Recorder that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, JobKey, object]] = []

    def job_seen(self, key: JobKey, job: pb.Job) -> None:
        self.events.append(("seen", key, job))

    def job_lost(self, key: JobKey, why: str) -> None:
        self.events.append(("lost", key, why))

    def reconciled(self, key: JobKey, job: pb.Job) -> None:
        self.events.append(("reconciled", key, job))

    def reconcile_settled(self, key: JobKey) -> None:
        self.events.append(("settled", key, None))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]

    def last_job(self) -> pb.Job:
        jobs = [value for kind, _, value in self.events if isinstance(value, pb.Job)]
        return jobs[-1]


@pytest.fixture
async def follower_of():
    made: list[tuple[Follower, GrpcAgentTransport]] = []

    def make(lost_after: float = 3600.0) -> tuple[Follower, Recording]:
        transport = GrpcAgentTransport(1.0)
        recording = Recording()
        follower = Follower(transport, recording, 1.0, lost_after)
        made.append((follower, transport))
        return follower, recording

    yield make
    for follower, transport in made:
        await follower.close()
        await transport.close()


async def start_job(agent_control, address: str, policy: pb.BackupPolicy) -> pb.Job:
    reply = await agent_control(address).StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=policy)
    )
    return reply.job


def test_agent_lost_after_accepts_1_s_to_7_days() -> None:
    """Out of range is a ValueError naming --agent-lost-after."""
    assert check_lost_after(1.0) == 1.0 and check_lost_after(7 * 86400.0) == 7 * 86400.0
    for bad in (0.5, 7 * 86400.0 + 1, float("nan")):
        with pytest.raises(ValueError, match="--agent-lost-after"):
            check_lost_after(bad)


@pytest.mark.parametrize("missing_source", [False, True])
async def test_a_job_is_followed_to_its_end(
    start_agent, agent_control, follower_of, tmp_path, source_tree, missing_source
) -> None:
    """A running snapshot first, the end last: SUCCEEDED with its restore point, or FAILED with its error."""
    agent = await start_agent("a1")
    source = tmp_path / "missing" if missing_source else source_tree
    job = await start_job(agent_control, agent.address, backup_policy(tmp_path, source))
    follower, recording = follower_of()
    follower.follow(KEY, agent.address, job)
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0))
    end = recording.last_job()
    if missing_source:
        assert end.state == pb.JOB_STATE_FAILED and end.error
    else:
        assert end.state == pb.JOB_STATE_SUCCEEDED and end.restore_point_id
    assert set(recording.kinds()) == {"seen"}


async def test_an_agent_killed_mid_job_is_followed_through_its_restart(
    spawn, agent_control, follower_of, tmp_path, source_tree
) -> None:
    """kill -9 breaks the stream; once the agent is back on its address, the job's end (FAILED) is learned."""
    (source_tree / "big.bin").write_bytes(b"k" * 1_000_000)
    listen = f"127.0.0.1:{stable_port()}"
    data_dir = str(tmp_path / "agent")
    args = ("agent_stub", "--listen", listen, "--name", "a1", "--data-dir", data_dir)
    process = spawn(*args)
    policy = backup_policy(tmp_path, source_tree, throttle_bytes_per_second=200_000)
    job = await start_job(agent_control, listen, policy)
    follower, recording = follower_of()
    follower.follow(KEY, listen, job)
    await wait_for(lambda: asyncio.sleep(0, bool(recording.events)))
    process.popen.send_signal(signal.SIGKILL)
    process.popen.wait()
    await asyncio.sleep(0.5)
    spawn(*args)
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0), 15)
    end = recording.last_job()
    assert end.id == job.id and end.state == pb.JOB_STATE_FAILED
    assert "stopped while this job was running" in end.error
    assert "lost" not in recording.kinds()


async def test_an_agent_that_never_comes_back_is_lost_then_corrected(
    start_fleet, agent_control, follower_of, monkeypatch
) -> None:
    """Silent past lost_after: unknown; when it answers again, its job's real end is recorded."""
    monkeypatch.setattr(following, "LONGEST_RETRY", 0.5)
    fleet = await start_fleet(count=1, job_seconds=0.2, restart=1.0, restart_seconds=2.5)
    address = fleet.addresses()["agents"][0]["address"]
    job = await start_job(agent_control, address, backup_policy(Path("/tmp"), Path("/srv")))
    follower, recording = follower_of(lost_after=1.0)
    follower.follow(KEY, address, job)
    await wait_for(lambda: asyncio.sleep(0, "lost" in recording.kinds()), 5)
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0), 10)
    kinds = recording.kinds()
    assert kinds.index("lost") < len(kinds) - 1 and kinds[-1] == "seen"
    assert recording.last_job().state == pb.JOB_STATE_FAILED


async def test_a_failure_inside_following_settles_the_job_as_unknown(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """A bug while recording a snapshot (here, the recorder raising) ends that job's
    following as lost, naming the failure, so its session's outcome can still settle."""

    class Failing(Recording):
        def job_seen(self, key: JobKey, job: pb.Job) -> None:
            raise ValueError("a bug in recording")

    agent = await start_agent("a1")
    job = await start_job(agent_control, agent.address, backup_policy(tmp_path, source_tree))
    transport = GrpcAgentTransport(1.0)
    recording = Failing()
    follower = Follower(transport, recording, 1.0)
    try:
        follower.follow(KEY, agent.address, job)
        await wait_for(lambda: asyncio.sleep(0, follower.count == 0))
    finally:
        await follower.close()
        await transport.close()
    [(kind, key, why)] = recording.events
    assert (kind, key) == ("lost", KEY) and "a bug in recording" in str(why)


async def test_a_timed_out_command_that_arrived_is_reconciled(
    start_fleet, agent_control, follower_of
) -> None:
    """ListJobs(session) finds the job the command started: reconciled, then followed to its end."""
    fleet = await start_fleet(count=1, job_seconds=0.3)
    address = fleet.addresses()["agents"][0]["address"]
    job = await start_job(agent_control, address, backup_policy(Path("/tmp"), Path("/srv")))
    follower, recording = follower_of()
    follower.reconcile(KEY, address, job.policy_id)
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0))
    assert recording.kinds()[0] == "reconciled" and recording.events[0][2].id == job.id
    assert recording.last_job().state == pb.JOB_STATE_SUCCEEDED


async def test_a_command_that_never_arrived_stays_not_received(
    start_fleet, follower_of, closed_address, monkeypatch
) -> None:
    """No job in the session's list settles at once; an agent that never answers settles after the minute."""
    fleet = await start_fleet(count=1)
    address = fleet.addresses()["agents"][0]["address"]
    follower, recording = follower_of()
    follower.reconcile(KEY, address, "nightly")
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0))
    assert recording.kinds() == ["settled"]
    monkeypatch.setattr(following, "RECONCILE_FOR", 0.5)
    follower, recording = follower_of(lost_after=1.0)
    follower.reconcile(KEY, closed_address, "nightly")
    await wait_for(lambda: asyncio.sleep(0, recording.kinds() == ["settled"]), 5)
    await wait_for(lambda: asyncio.sleep(0, follower.count == 0), 5)
    assert recording.kinds() == ["settled"]
