"""DeletePolicy of a policy with running jobs: FAILED_PRECONDITION naming them, unless force (stop first)."""

import asyncio

import grpc
import pytest
from outcome_support import create, watch_outcome
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.postgres_follows import FollowRows

from conftest import job_ends, policy_over, wait_for


async def start_a_long_job(policy_service, start_agent, tmp_path, source_tree):
    """Agent a1 and a started session of policy nightly whose job runs about 10 s."""
    (source_tree / "big.bin").write_bytes(b"x" * 2_000_000)
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=200_000
    )
    await create(policy_service, policy)
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    return agent, started


async def test_a_policy_with_running_jobs_is_deleted_only_with_force(
    policy_service, start_agent, agent_control, tmp_path, source_tree
) -> None:
    """Without force: FAILED_PRECONDITION naming the computer and job, nothing deleted; with force: a stop session, then gone."""
    agent, started = await start_a_long_job(policy_service, start_agent, tmp_path, source_tree)
    job_id = started.computer_results[0].job_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "a1" in refused.value.details() and job_id in refused.value.details()
    assert (await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nightly"))).id

    await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly", force=True))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nightly"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    stopped = await job_ends(agent_control(agent.address), job_id)
    assert stopped.state == pb.JOB_STATE_STOPPED
    sessions = (
        await policy_service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
    ).sessions
    assert [s.action for s in sessions] == [pb.SESSION_ACTION_STOP, pb.SESSION_ACTION_START]
    final = (await watch_outcome(policy_service, sessions[0].id))[-1]
    assert final.outcome == pb.SESSION_STATE_SUCCESS and final.statistics.jobs_stopped == 1


async def test_a_job_is_named_while_its_sessions_shares_are_still_read(
    policy_service, start_agent, tmp_path, source_tree, monkeypatch
) -> None:
    """Between its delivery and its following (on PostgreSQL, reading which replicas
    follow which of its computers first), a session's running job still blocks a plain
    DeletePolicy and is stopped by a forced one."""
    read_shares = FollowRows.shared_positions

    async def slow_shares(storage: FollowRows, session_id: str) -> list[int]:
        await asyncio.sleep(1.5)
        return await read_shares(storage, session_id)

    monkeypatch.setattr(FollowRows, "shared_positions", slow_shares)
    _, started = await start_a_long_job(policy_service, start_agent, tmp_path, source_tree)
    await asyncio.sleep(0.3)  # past TRACK_AFTER: on PostgreSQL, inside the slow read
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert started.computer_results[0].job_id in refused.value.details()
    await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly", force=True))
    sessions = (
        await policy_service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
    ).sessions
    assert [s.action for s in sessions] == [pb.SESSION_ACTION_STOP, pb.SESSION_ACTION_START]


async def test_a_start_still_being_delivered_blocks_a_plain_delete(
    start_server, start_agent, agent_control, tmp_path, source_tree, hung_address, closed_address
) -> None:
    """While a start's delivery waits on a computer that never answers, its jobs already
    running on the others and its pending computers block a plain DeletePolicy; a forced
    one stops the running job."""
    server = await start_server(agent_deadline=2.0)  # the silent computer holds it 2 s
    channel = grpc.aio.insecure_channel(server.address)
    policy_service = api_grpc.PolicyServiceStub(channel)
    (source_tree / "big.bin").write_bytes(b"x" * 2_000_000)
    agent = await start_agent("a1")
    computers = [("a1", agent.address), ("silent", hung_address), ("down", closed_address)]
    policy = policy_over(computers, tmp_path, source_tree, throttle_bytes_per_second=200_000)
    await create(policy_service, policy)
    starting = asyncio.ensure_future(
        policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    )
    control = agent_control(agent.address)

    async def a1_runs() -> bool:
        jobs = (await control.ListJobs(agent_api.ListJobsRequest(policy_id="nightly"))).jobs
        return any(job.state == pb.JOB_STATE_RUNNING for job in jobs)

    await wait_for(a1_runs)
    assert not starting.done()  # the silent computer holds the delivery for its deadline
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "a1 (job j-" in refused.value.details()
    assert "silent (start being delivered)" in refused.value.details()
    await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly", force=True))
    started = await starting
    stopped = await job_ends(control, started.computer_results[0].job_id)
    assert stopped.state == pb.JOB_STATE_STOPPED
    await channel.close()


async def test_a_policy_whose_jobs_ended_is_deleted_without_force(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Once the jobs have ended, a plain DeletePolicy deletes; an unknown policy stays NOT_FOUND."""
    agent = await start_agent("a1")
    await create(policy_service, policy_over([("a1", agent.address)], tmp_path, source_tree))
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    await watch_outcome(policy_service, started.id)
    await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly"))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly", force=True))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
