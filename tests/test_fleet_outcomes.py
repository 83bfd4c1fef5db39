"""The fleet simulator's jobs end as their agent's outcome says, and can be watched and listed by session."""

import asyncio
import time

import grpc
import pytest
from test_fleet import agents_of, start_request

from agent_stub.fleet import parse_args
from agent_stub.simulated import assign_outcomes
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

SHORT = 0.4


async def watch(agent, job_id: str) -> list[pb.Job]:
    return [job async for job in agent.WatchJob(agent_api.WatchJobRequest(job_id=job_id))]


def test_outcomes_are_assigned_exactly_and_reproducibly() -> None:
    """Each share is exactly round(count * share) agents, the same for the same seed."""
    outcomes = assign_outcomes(100, {"fail": 0.1, "hang": 0.05, "restart": 0.02}, seed=7)
    assert (outcomes.count("fail"), outcomes.count("hang"), outcomes.count("restart")) == (10, 5, 2)
    assert outcomes.count("succeed") == 83
    assert outcomes == assign_outcomes(100, {"fail": 0.1, "hang": 0.05, "restart": 0.02}, seed=7)


async def test_succeed_and_fail_jobs_are_watched_to_their_end(start_fleet, agent_control) -> None:
    """WatchJob sends the running job at once and its end last: SUCCEEDED, or FAILED with an error."""
    fleet = await start_fleet(count=2, job_seconds=SHORT, fail=0.5)
    outcomes = fleet.addresses()["outcomes"]
    for address in agents_of(fleet):
        agent = agent_control(address)
        job = (await agent.StartJob(start_request())).job
        began = time.monotonic()
        snapshots = await watch(agent, job.id)
        assert snapshots[0].state == pb.JOB_STATE_RUNNING
        assert time.monotonic() - began < SHORT + 1.0
        if outcomes.get(address) == "fail":
            assert snapshots[-1].state == pb.JOB_STATE_FAILED and snapshots[-1].error
        else:
            assert snapshots[-1].state == pb.JOB_STATE_SUCCEEDED


async def test_a_hung_job_runs_until_stopped(start_fleet, agent_control) -> None:
    """A hang agent's job is still running past its duration; a stop ends its watch STOPPED."""
    fleet = await start_fleet(count=1, job_seconds=0.1, hang=1.0)
    agent = agent_control(agents_of(fleet)[0])
    job = (await agent.StartJob(start_request())).job
    watching = asyncio.ensure_future(watch(agent, job.id))
    await asyncio.sleep(0.3)
    assert (await agent.GetJob(agent_api.GetJobRequest(job_id=job.id))).state == (
        pb.JOB_STATE_RUNNING
    )
    await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    snapshots = await asyncio.wait_for(watching, 2)
    assert snapshots[-1].state == pb.JOB_STATE_STOPPED


async def test_a_restart_agent_goes_away_and_comes_back_with_the_job_failed(
    start_fleet, agent_control
) -> None:
    """Half-way through, the agent stops serving (the watch breaks), then answers again: the job FAILED."""
    fleet = await start_fleet(count=1, job_seconds=0.4, restart=1.0, restart_seconds=0.5)
    address = agents_of(fleet)[0]
    agent = agent_control(address)
    job = (await agent.StartJob(start_request())).job
    with pytest.raises(grpc.aio.AioRpcError):
        await watch(agent, job.id)
    for _ in range(50):
        try:
            ended = await agent_control(address).GetJob(agent_api.GetJobRequest(job_id=job.id))
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    assert (
        ended.state == pb.JOB_STATE_FAILED and "stopped while this job was running" in ended.error
    )


async def test_start_is_idempotent_and_jobs_list_by_session(start_fleet, agent_control) -> None:
    """A repeat of a session returns its job; ListJobs filters by session like a real agent."""
    fleet = await start_fleet(count=1, job_seconds=SHORT)
    agent = agent_control(agents_of(fleet)[0])
    first = await agent.StartJob(start_request(session_id="s-1"))
    await watch(agent, first.job.id)
    again = await agent.StartJob(start_request(session_id="s-1"))
    assert again.job.id == first.job.id and not again.already_running
    assert again.job.state == pb.JOB_STATE_SUCCEEDED
    listed = await agent.ListJobs(agent_api.ListJobsRequest(session_id="s-1"))
    assert [job.id for job in listed.jobs] == [first.job.id]
    assert not (await agent.ListJobs(agent_api.ListJobsRequest(session_id="s-9"))).jobs


def test_bad_shares_are_refused_at_start_up(capsys) -> None:
    """Shares outside 0..1 or adding up past 1 are a clear usage error."""
    with pytest.raises(SystemExit):
        parse_args(["--count", "2", "--base-port", "0", "--fail", "0.7", "--hang", "0.5"])
    assert "--fail, --hang, --restart and --partition" in capsys.readouterr().err
