"""The scheduler inside a real server: scheduled and missed runs, subset and retry starts, window-end stops,
each test over SQLite and over PostgreSQL."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both
from scheduler_support import ManualClock

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import job_ends, policy_over, wait_for

Start = Callable[..., Awaitable[BackupServer]]


async def sessions_of(server: BackupServer, policy_id: str = "nightly") -> list[pb.PolicySession]:
    """Every stored session of the policy, oldest first, with results."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_stub(channel)
        listed = await stub.ListSessions(api.ListSessionsRequest(policy_id=policy_id, page_size=100))
        full = [await stub.GetSession(api.GetSessionRequest(session_id=s.id)) for s in listed.sessions]
    return list(reversed(full))


def api_stub(channel: grpc.aio.Channel) -> api_grpc.PolicyServiceStub:
    return api_grpc.PolicyServiceStub(channel)


async def advance(server: BackupServer, clock: ManualClock, to: datetime) -> None:
    """Moves the server's clock, wakes its scheduler and waits for what it started."""
    clock.current = to
    assert server.scheduler is not None
    server.scheduler.wake()
    await asyncio.sleep(0.05)
    await server.scheduler.idle()


async def test_a_missed_run_is_run_once_at_start_up_with_a_warning(start_server: Start, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """A server down for three days starts the latest missed 02:00 run once, as a SCHEDULE session warning when it was due."""
    now = datetime.now(UTC)
    first = await start_server(clock=ManualClock(now))
    async with grpc.aio.insecure_channel(first.address) as channel:
        await api_stub(channel).CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over([("c1", closed_address)], tmp_path, source_tree, schedule=pb.Schedule(cron="0 2 * * *")),
        ))  # fmt: skip
    await first.stop()
    later = now + timedelta(days=3)
    clock = ManualClock(later)
    second = await start_server(clock=clock)
    await wait_for(lambda: _count(second, 1), 10)
    assert second.scheduler is not None
    await second.scheduler.idle()
    [missed] = await sessions_of(second)
    due = later.replace(hour=2, minute=0, second=0, microsecond=0)
    if due > later:
        due -= timedelta(days=1)
    assert missed.trigger == pb.SESSION_TRIGGER_SCHEDULE and missed.attempt == 0
    assert f"due at {due:%Y-%m-%d %H:%M} UTC" in missed.warnings[0]
    await advance(second, clock, later + timedelta(minutes=5))
    assert len(await sessions_of(second)) == 1


async def _count(server: BackupServer, expected: int) -> bool:
    return len(await sessions_of(server)) >= expected


async def test_scheduled_starts_follow_the_clock_and_operator_sessions_say_operator(start_server: Start, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """An hourly schedule starts a SCHEDULE session when the clock reaches the hour; StartPolicy's session has trigger OPERATOR."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    clock = ManualClock(hour - timedelta(minutes=10))
    server = await start_server(clock=clock)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_stub(channel)
        created = await stub.CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over([("c1", closed_address)], tmp_path, source_tree, schedule=pb.Schedule(cron="0 * * * *")),
        ))  # fmt: skip
        assert created.HasField("next_run_time")
        manual = await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        assert manual.trigger == pb.SESSION_TRIGGER_OPERATOR
    await advance(server, clock, hour - timedelta(minutes=1))
    assert len(await sessions_of(server)) == 1
    await advance(server, clock, hour + timedelta(seconds=1))
    triggers = [s.trigger for s in await sessions_of(server)]
    assert triggers == [pb.SESSION_TRIGGER_OPERATOR, pb.SESSION_TRIGGER_SCHEDULE]


async def test_subset_starts_and_bad_names_or_sessions(policy_service, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """computer_names starts only those; an unknown name, another policy's session or an unknown one is refused and stores nothing."""
    agent = await start_agent("a1")
    await policy_service.CreatePolicy(api.CreatePolicyRequest(
        policy_id="nightly",
        policy=policy_over([("a1", agent.address), ("gone", closed_address)], tmp_path, source_tree),
    ))  # fmt: skip
    await policy_service.CreatePolicy(api.CreatePolicyRequest(
        policy_id="other", policy=policy_over([("x", closed_address)], tmp_path, source_tree),
    ))  # fmt: skip
    only = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", computer_names=["a1"]))
    assert [r.computer.name for r in only.computer_results] == ["a1"]
    assert only.statistics.total == 1 and only.state == pb.SESSION_STATE_SUCCESS

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", computer_names=["a1", "nobody"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("computer_names[1]: 'nobody'")

    foreign = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="other"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", retry_of_session_id=foreign.id))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("retry_of_session_id: ")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", retry_of_session_id="s-nothing-here"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "retry_of_session_id" in raised.value.details()
    listed = await policy_service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
    assert len(listed.sessions) == 1


async def test_window_end_stops_only_the_computers_whose_job_runs(start_server: Start, start_agent, agent_control, tmp_path: Path, source_tree: Path) -> None:
    """At the window's end a WINDOW stop session targets only the agent whose throttled job runs, and its job ends STOPPED."""
    busy, idle = await start_agent("busy"), await start_agent("idle")
    (source_tree / "big.bin").write_bytes(b"z" * 3_000_000)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = ManualClock(now)
    server = await start_server(clock=clock)
    window = pb.BackupWindow(start=f"{now:%H:%M}", end=f"{now + timedelta(hours=1):%H:%M}")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_stub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over([("busy", busy.address), ("idle", idle.address)], tmp_path, source_tree,
                               backup_window=window, throttle_bytes_per_second=200_000),
        ))  # fmt: skip
        started = await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly", computer_names=["busy"]))
    job_id = started.computer_results[0].job_id
    await advance(server, clock, now + timedelta(minutes=30))
    assert len(await sessions_of(server)) == 1
    await advance(server, clock, now + timedelta(hours=1, seconds=1))
    sessions = await sessions_of(server)
    assert len(sessions) == 2
    stop = sessions[-1]
    assert stop.action == pb.SESSION_ACTION_STOP and stop.trigger == pb.SESSION_TRIGGER_WINDOW
    assert [r.computer.name for r in stop.computer_results] == ["busy"]
    ended = await job_ends(agent_control(busy.address), job_id)
    assert ended.state == pb.JOB_STATE_STOPPED
    jobs = await agent_control(idle.address).ListJobs(agent_api.ListJobsRequest(policy_id="nightly"))
    assert list(jobs.jobs) == []


async def test_window_end_stops_the_computers_it_cannot_ask_too(start_server: Start, start_agent, agent_control, tmp_path: Path, source_tree: Path, closed_address: str, hung_addresses) -> None:
    """A computer whose port is closed and one that never answers may be running the job: the WINDOW stop targets them beside the busy agent and records them not received; the idle agent is left out."""
    busy, idle = await start_agent("busy"), await start_agent("idle")
    (source_tree / "big.bin").write_bytes(b"z" * 3_000_000)
    [hung] = hung_addresses(1)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = ManualClock(now)
    server = await start_server(clock=clock, agent_deadline=1.0)
    window = pb.BackupWindow(start=f"{now:%H:%M}", end=f"{now + timedelta(hours=1):%H:%M}")
    computers = [("busy", busy.address), ("idle", idle.address), ("closed", closed_address), ("silent", hung)]
    async with grpc.aio.insecure_channel(server.address) as channel:
        await api_stub(channel).CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over(computers, tmp_path, source_tree, backup_window=window, throttle_bytes_per_second=200_000),
        ))  # fmt: skip
        started = await api_stub(channel).StartPolicy(api.StartPolicyRequest(policy_id="nightly", computer_names=["busy"]))
    await advance(server, clock, now + timedelta(hours=1, seconds=1))
    stop = (await sessions_of(server))[-1]
    assert stop.action == pb.SESSION_ACTION_STOP and stop.trigger == pb.SESSION_TRIGGER_WINDOW
    deliveries = {r.computer.name: r.delivery for r in stop.computer_results}
    assert deliveries == {"busy": pb.DELIVERY_RECEIVED, "closed": pb.DELIVERY_NOT_RECEIVED, "silent": pb.DELIVERY_NOT_RECEIVED}
    assert stop.statistics.not_received == 2 and stop.state == pb.SESSION_STATE_WARNING
    ended = await job_ends(agent_control(busy.address), started.computer_results[0].job_id)
    assert ended.state == pb.JOB_STATE_STOPPED
