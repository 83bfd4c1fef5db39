"""AgentControl.WatchJob on a real agent: a snapshot at once, progress at most every few seconds, the end last."""

import time

import grpc
import pytest
from test_agent import backup_policy

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends


async def test_a_running_job_is_watched_to_its_end(
    start_agent, agent_control, tmp_path, source_tree, monkeypatch
) -> None:
    """The first snapshot comes at once, progress snapshots are spaced, and the final one ends the stream OK."""
    monkeypatch.setattr("agent_stub.jobs.PROGRESS_EVERY", 0.3)
    (source_tree / "big.bin").write_bytes(b"w" * 600_000)
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    started = await control.StartJob(
        agent_api.StartJobRequest(
            session_id="s-1",
            policy=backup_policy(tmp_path, source_tree, throttle_bytes_per_second=400_000),
        )
    )
    arrivals: list[tuple[float, pb.Job]] = []
    began = time.monotonic()
    call = control.WatchJob(agent_api.WatchJobRequest(job_id=started.job.id))
    async for job in call:
        arrivals.append((time.monotonic(), job))
    assert await call.code() == grpc.StatusCode.OK
    first_at, first = arrivals[0]
    assert first_at - began < 0.5 and first.id == started.job.id
    states = [job.state for _, job in arrivals]
    assert states[-1] == pb.JOB_STATE_SUCCEEDED and set(states[:-1]) == {pb.JOB_STATE_RUNNING}
    assert arrivals[-1][1].restore_point_id
    assert len(arrivals) >= 3, "a 1.5 s job at 0.3 s per progress snapshot shows its progress"
    progress_times = [at for at, job in arrivals[1:-1]]
    gaps = [
        later - earlier for earlier, later in zip(progress_times, progress_times[1:], strict=False)
    ]
    assert all(gap > 0.2 for gap in gaps), gaps
    done = [job.bytes_done for _, job in arrivals]
    assert done == sorted(done)


async def test_an_ended_job_gives_one_snapshot(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """WatchJob of a job that has ended sends it once and closes OK."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    started = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree))
    )
    ended = await job_ends(control, started.job.id)
    call = control.WatchJob(agent_api.WatchJobRequest(job_id=started.job.id))
    snapshots = [job async for job in call]
    assert snapshots == [ended]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_stopped_job_ends_the_watch_stopped(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """A watcher sees a stop as the final STOPPED snapshot."""
    (source_tree / "big.bin").write_bytes(b"s" * 1_000_000)
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    started = await control.StartJob(
        agent_api.StartJobRequest(
            policy=backup_policy(tmp_path, source_tree, throttle_bytes_per_second=100_000)
        )
    )
    call = control.WatchJob(agent_api.WatchJobRequest(job_id=started.job.id))
    first = await call.read()
    assert first.state == pb.JOB_STATE_RUNNING
    await control.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    rest = []
    while (job := await call.read()) is not grpc.aio.EOF:
        rest.append(job)
    assert rest[-1].state == pb.JOB_STATE_STOPPED


@pytest.mark.parametrize(
    ("job_id", "code"),
    [("j-none", grpc.StatusCode.NOT_FOUND), ("Not An Id", grpc.StatusCode.INVALID_ARGUMENT)],
)
async def test_unknown_and_malformed_jobs_are_refused(
    start_agent, agent_control, job_id, code
) -> None:
    """An unknown job is NOT_FOUND, a malformed id INVALID_ARGUMENT naming job_id."""
    agent = await start_agent("a1")
    call = agent_control(agent.address).WatchJob(agent_api.WatchJobRequest(job_id=job_id))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == code
    assert "job" in (raised.value.details() or "")
