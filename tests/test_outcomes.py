"""The server follows every job to its end: outcome, jobs_* statistics and job records, with real agents."""

import asyncio
import signal
import subprocess
import sys

import grpc
import pytest
from outcome_support import create, outcome_final, start_and_watch, watch_outcome
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from agent_stub.service import AgentControl
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import DEADLINE, policy_over, stable_port


async def test_a_job_that_succeeds_makes_the_outcome_success(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """The job's end is recorded in the session: SUCCEEDED with its restore point, outcome SUCCESS, status protected."""
    agent = await start_agent("a1")
    await create(policy_service, policy_over([("a1", agent.address)], tmp_path, source_tree))
    started, final = await start_and_watch(policy_service)
    assert started.state == pb.SESSION_STATE_SUCCESS
    assert started.outcome in (pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_SUCCESS)
    assert final.outcome == pb.SESSION_STATE_SUCCESS and final.HasField("outcome_time")
    [result] = final.computer_results
    assert result.job.state == pb.JOB_STATE_SUCCEEDED and result.job.restore_point_id
    assert final.statistics.jobs_succeeded == 1 and final.statistics.jobs_running == 0
    stored = await policy_service.GetSession(api.GetSessionRequest(session_id=final.id))
    assert stored == final
    statuses = await policy_service.ListComputerStatuses(
        api.ListComputerStatusesRequest(policy_id="nightly")
    )
    [status] = statuses.computer_statuses
    assert status.computer.name == "a1" and status.last_job.id == result.job.id
    assert status.last_restore_point_id == result.job.restore_point_id
    assert status.consecutive_failures == 0 and status.HasField("last_success_time")


async def test_a_job_that_fails_makes_the_outcome_failed(
    policy_service, start_agent, tmp_path
) -> None:
    """A missing source: delivery SUCCESS, but the job FAILED with its error and the outcome FAILED."""
    agent = await start_agent("a1")
    await create(policy_service, policy_over([("a1", agent.address)], tmp_path, tmp_path / "gone"))
    started, final = await start_and_watch(policy_service)
    assert started.state == pb.SESSION_STATE_SUCCESS
    assert final.outcome == pb.SESSION_STATE_FAILED
    [result] = final.computer_results
    assert result.job.state == pb.JOB_STATE_FAILED and result.job.error
    assert final.statistics.jobs_failed == 1
    statuses = await policy_service.ListComputerStatuses(api.ListComputerStatusesRequest())
    assert statuses.computer_statuses[0].consecutive_failures == 1


async def test_watch_session_streams_until_the_outcome_is_final(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Snapshots go on after delivery while the job runs; the last one carries the final outcome."""
    (source_tree / "big.bin").write_bytes(b"w" * 600_000)
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=600_000
    )
    await create(policy_service, policy)
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    snapshots = await watch_outcome(policy_service, started.id)
    assert any(s.state == pb.SESSION_STATE_SUCCESS and not outcome_final(s) for s in snapshots)
    assert snapshots[-1].outcome == pb.SESSION_STATE_SUCCESS
    assert all(not outcome_final(s) for s in snapshots[:-1])


async def test_a_stop_session_follows_the_job_it_stopped(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """The stop's job is the job it stopped, followed to STOPPED: stop SUCCESS, jobs_stopped 1; the start is WARNING."""
    (source_tree / "big.bin").write_bytes(b"s" * 2_000_000)
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=200_000
    )
    await create(policy_service, policy)
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    stopped = await policy_service.StopPolicy(api.StopPolicyRequest(policy_id="nightly"))
    stop_final = (await watch_outcome(policy_service, stopped.id))[-1]
    [result] = stop_final.computer_results
    assert result.job.id == started.computer_results[0].job_id
    assert result.job.state == pb.JOB_STATE_STOPPED
    assert stop_final.outcome == pb.SESSION_STATE_SUCCESS
    assert stop_final.statistics.jobs_stopped == 1
    start_final = (await watch_outcome(policy_service, started.id))[-1]
    assert start_final.outcome == pb.SESSION_STATE_WARNING
    assert start_final.statistics.jobs_stopped == 1


async def test_an_agent_killed_mid_job_ends_failed_after_its_restart(
    start_server, spawn, tmp_path, source_tree
) -> None:
    """kill -9 during the job: once the agent is back, the job is FAILED and so is the outcome."""
    (source_tree / "big.bin").write_bytes(b"k" * 1_000_000)
    listen = f"127.0.0.1:{stable_port()}"
    args = ("agent_stub", "--listen", listen, "--name", "a1", "--data-dir", str(tmp_path / "a1"))
    agent = spawn(*args)
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(
            [("a1", listen)], tmp_path, source_tree, throttle_bytes_per_second=200_000
        )
        await create(service, policy)
        started = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        agent.popen.send_signal(signal.SIGKILL)
        agent.popen.wait()
        spawn(*args)
        final = (await watch_outcome(service, started.id))[-1]
    [result] = final.computer_results
    assert result.job.state == pb.JOB_STATE_FAILED
    assert "stopped while this job was running" in result.job.error
    assert final.outcome == pb.SESSION_STATE_FAILED and final.statistics.jobs_failed == 1


async def test_a_hung_computer_whose_command_arrived_is_reconciled(
    policy_service, start_agent, tmp_path, source_tree, monkeypatch
) -> None:
    """StartJob started the job but answered after the deadline: NOT_RECEIVED, then reconciled from ListJobs."""
    original = AgentControl.StartJob

    async def answers_late(self, request, context):  # type: ignore[no-untyped-def]
        reply = await original(self, request, context)
        await asyncio.sleep(DEADLINE + 0.5)
        return reply

    monkeypatch.setattr(AgentControl, "StartJob", answers_late)
    agent = await start_agent("late")
    await create(policy_service, policy_over([("late", agent.address)], tmp_path, source_tree))
    started, final = await start_and_watch(policy_service)
    assert started.computer_results[0].delivery == pb.DELIVERY_NOT_RECEIVED
    assert started.computer_results[0].detail.startswith("DEADLINE_EXCEEDED")
    [result] = final.computer_results
    assert result.delivery == pb.DELIVERY_RECEIVED and result.reconciled
    assert result.job.state == pb.JOB_STATE_SUCCEEDED
    assert final.statistics.received == 1 and final.statistics.not_received == 0
    assert final.state == pb.SESSION_STATE_SUCCESS and final.outcome == pb.SESSION_STATE_SUCCESS
    assert any("reconciled" in warning for warning in final.warnings)


async def test_unreachable_computers_do_not_hold_the_outcome(
    policy_service, start_agent, tmp_path, source_tree, closed_address, hung_address
) -> None:
    """A refused and a hung computer stay not received; the outcome is final (WARNING) once the hung one has been asked."""
    agent = await start_agent("a1")
    computers = [("a1", agent.address), ("down", closed_address), ("hung", hung_address)]
    await create(policy_service, policy_over(computers, tmp_path, source_tree))
    _, final = await start_and_watch(policy_service)
    assert final.outcome == pb.SESSION_STATE_WARNING
    assert final.statistics.not_received == 2 and final.statistics.jobs_succeeded == 1
    assert not any(result.reconciled for result in final.computer_results)


def test_agent_lost_after_out_of_range_is_a_clear_start_up_error(tmp_path) -> None:
    """backup-server --agent-lost-after 0.5 exits with a usage error naming the flag."""
    for bad in ("0.5", "700000", "nan"):
        result = subprocess.run(
            [sys.executable, "-m", "backup_server", "--db", str(tmp_path / "s.db"),
             "--agent-lost-after", bad],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 2 and "--agent-lost-after" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("agent_lost_after", [1.0])
async def test_a_lost_agent_is_unknown_then_corrected(
    start_server, start_fleet, tmp_path, agent_lost_after
) -> None:
    """Silent past --agent-lost-after: unknown and the outcome final; it answers again: corrected, outcome_time updated."""
    fleet = await start_fleet(count=1, job_seconds=1.2, partition=1.0, restart_seconds=3.0)
    [agent] = fleet.addresses()["agents"]
    server = await start_server(agent_lost_after=agent_lost_after)
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        await create(service, policy_over([("sim", agent["address"])], tmp_path, tmp_path / "src"))
        started = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        snapshots = await watch_outcome(service, started.id)
        lost = snapshots[-1]
        assert lost.outcome == pb.SESSION_STATE_FAILED and lost.statistics.jobs_unknown == 1
        assert lost.computer_results[0].job_unknown

        async def corrected() -> pb.PolicySession:
            while True:
                now = await service.GetSession(api.GetSessionRequest(session_id=started.id))
                if now.outcome == pb.SESSION_STATE_SUCCESS:
                    return now
                await asyncio.sleep(0.2)

        fixed = await asyncio.wait_for(corrected(), 20)
    assert fixed.statistics.jobs_unknown == 0 and fixed.statistics.jobs_succeeded == 1
    assert not fixed.computer_results[0].job_unknown
    assert fixed.outcome_time.ToNanoseconds() > lost.outcome_time.ToNanoseconds()


async def test_a_list_read_across_the_outcomes_store_shows_the_final_session(
    server, policy_service, start_agent, tmp_path, source_tree
) -> None:
    """ListSessions whose storage read began while the job ran and returned after the final
    outcome was stored and the session left memory shows it final, as WatchSession ended
    (it used to return the RUNNING row the read had found)."""
    (source_tree / "half-a-second.bin").write_bytes(b"x" * 100_000)
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=200_000
    )
    await create(policy_service, policy)
    read = server.storage.list_sessions

    async def slow_list(*args, **kwargs):
        rows = await read(*args, **kwargs)
        await asyncio.sleep(2.0)  # the job ends, its outcome is stored meanwhile
        return rows

    server.storage.list_sessions = slow_list
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    listed = await policy_service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
    final = (await watch_outcome(policy_service, started.id))[-1]
    assert final.outcome == pb.SESSION_STATE_SUCCESS
    assert [s.outcome for s in listed.sessions] == [pb.SESSION_STATE_SUCCESS]
