"""Several server replicas over one real PostgreSQL: every RPC on every replica, watching across
replicas, retries with the same session id, leases, leadership, and a replica killed -9."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from storage_conformance import a_session

from backup.errors import Unavailable
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.replicas import Replicas
from backup_server.storage.interface import INTERRUPTED
from backup_server.storage.postgres import PostgresStorage

from conftest import job_ends, policy_over, wait_for

Stubs = tuple[api_grpc.PolicyServiceStub, api_grpc.PolicyServiceStub]


@pytest.fixture
async def two_replicas(
    start_server, start_agent, postgres_url: str, slow_address: str, tmp_path: Path, source_tree: Path
) -> AsyncIterator[Stubs]:
    """Two replicas over one database, policy "p" (a live agent and a slow computer) made on the first."""
    first = await start_server(db=postgres_url, agent_deadline=2.0)
    second = await start_server(db=postgres_url, agent_deadline=2.0)
    agent = await start_agent("a1")
    policy = policy_over([("a1", agent.address), ("slow", slow_address)], tmp_path, source_tree)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
    ):
        on_first, on_second = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        await on_first.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        yield on_first, on_second


async def test_every_rpc_works_on_every_replica_and_watch_follows_a_session_run_elsewhere(
    two_replicas: Stubs,
) -> None:
    """A policy made on one replica is served by the other, whose WatchSession streams the session the first runs, ending within a second of it."""
    on_first, on_second = two_replicas
    assert (await on_second.GetPolicy(api.GetPolicyRequest(policy_id="p"))).name == "nightly"
    running = asyncio.ensure_future(
        on_first.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s1"))
    )

    async def stored() -> bool:
        listed = await on_second.ListSessions(api.ListSessionsRequest(policy_id="p"))
        return [session.id for session in listed.sessions] == ["s1"]

    await wait_for(stored)
    seen: list[pb.PolicySession] = []
    async for snapshot in on_second.WatchSession(api.WatchSessionRequest(session_id="s1")):
        seen.append(snapshot)
    watch_ended = time.monotonic()
    ended = await running
    assert time.monotonic() - watch_ended < 1.5
    assert seen[0].state == pb.SESSION_STATE_RUNNING
    # The reply is the delivered session; the watch goes on until the outcome is final.
    assert delivery_of(seen[-1]) == delivery_of(ended) and ended.statistics.received == 1
    assert seen[-1].outcome not in (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING)
    assert delivery_of(
        await on_second.GetSession(api.GetSessionRequest(session_id="s1"))
    ) == delivery_of(ended)


def delivery_of(session: pb.PolicySession) -> pb.PolicySession:
    """The session as its delivery left it: without what following its jobs adds later."""
    view = pb.PolicySession()
    view.CopyFrom(session)
    view.ClearField("outcome")
    view.ClearField("outcome_time")
    for name in ("jobs_running", "jobs_succeeded", "jobs_failed", "jobs_stopped", "jobs_unknown"):
        view.statistics.ClearField(name)
    for result in view.computer_results:
        for name in ("job", "last_contact_time", "job_unknown", "reconciled"):
            result.ClearField(name)
    return view


async def test_a_retry_on_another_replica_returns_the_session_the_first_runs(
    two_replicas: Stubs,
) -> None:
    """StartPolicy with the same session id on a second replica waits for the first's session and returns it; the agent gets one job."""
    on_first, on_second = two_replicas
    request = api.StartPolicyRequest(policy_id="p", session_id="retried")
    running = asyncio.ensure_future(on_first.StartPolicy(request))
    await asyncio.sleep(0.3)
    retried = await on_second.StartPolicy(request)
    assert delivery_of(retried) == delivery_of(await running)
    assert retried.state != pb.SESSION_STATE_RUNNING
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await on_second.StopPolicy(api.StopPolicyRequest(policy_id="p", session_id="retried"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len([r.job_id for r in retried.computer_results if r.job_id]) == 1


async def test_delete_policy_on_another_replica_sees_the_jobs_the_first_follows(
    start_server, start_agent, agent_control, postgres_url: str, tmp_path: Path, source_tree: Path
) -> None:
    """A job started and followed by one replica: DeletePolicy on the other is
    FAILED_PRECONDITION naming it; with force, the job is stopped and the policy gone."""
    (source_tree / "big.bin").write_bytes(b"x" * 2_000_000)
    first = await start_server(db=postgres_url)
    second = await start_server(db=postgres_url)
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=200_000
    )
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
    ):
        on_first, on_second = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        await on_first.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        started = await on_first.StartPolicy(api.StartPolicyRequest(policy_id="p"))
        job_id = started.computer_results[0].job_id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await on_second.DeletePolicy(api.DeletePolicyRequest(policy_id="p"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"a1 (job {job_id})" in refused.value.details()
        await on_second.DeletePolicy(api.DeletePolicyRequest(policy_id="p", force=True))
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await on_first.GetPolicy(api.GetPolicyRequest(policy_id="p"))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    stopped = await job_ends(agent_control(agent.address), job_id)
    assert stopped.state == pb.JOB_STATE_STOPPED


async def test_leases_list_the_live_replicas_and_leadership_has_one_holder(postgres_url: str) -> None:
    """Each replica's lease lists it until it ends or runs out; one storage at a time holds leadership, and another takes it when the holder goes."""
    first = await PostgresStorage.open(postgres_url, 2)
    second = await PostgresStorage.open(postgres_url, 2)
    try:
        await first.renew_lease("r-a", "127.0.0.1:1", 30)
        await second.renew_lease("r-b", "127.0.0.1:2", 0.2)
        assert await first.live_replicas() == ["r-a", "r-b"]
        await asyncio.sleep(0.3)
        assert await second.live_replicas() == ["r-a"]
        await first.end_lease("r-a")
        assert await second.live_replicas() == []
        assert (await first.hold_leadership(), await second.hold_leadership()) == (True, False)
        assert await first.hold_leadership() and not await second.hold_leadership()
    finally:
        await first.close()
    await wait_for(second.hold_leadership)  # once PostgreSQL has seen the holder go
    await second.close()


async def test_a_session_is_swept_only_once_its_replicas_lease_runs_out(postgres_url: str) -> None:
    """A running session whose replica's lease holds is not failed by another replica's sweep; once the lease runs out it is."""
    storage = await PostgresStorage.open(postgres_url, 2)
    try:
        await storage.renew_lease("r-busy", "127.0.0.1:1", 0.5)
        await storage.insert_session(a_session("busy"), owner="r-busy")
        assert await storage.fail_interrupted_sessions("r-other") == []
        await asyncio.sleep(0.6)
        assert await storage.fail_interrupted_sessions("r-other") == ["busy"]
    finally:
        await storage.close()


async def test_a_claimed_session_a_storage_error_kept_from_adoption_is_adopted_next_sweep(
    postgres_url: str,
) -> None:
    """A dead replica's session claimed, then its adoption failed (the database went away):
    no later claim returns it (it is this replica's now), yet the next sweep adopts it."""
    storage = await PostgresStorage.open(postgres_url, 2)
    adopted: list[str] = []

    async def adopt(session_id: str) -> None:
        if not adopted:
            adopted.append("refused")
            raise Unavailable("the server's database cannot be reached")
        adopted.append(session_id)

    replicas = Replicas(storage, "127.0.0.1:1", lease=30)
    try:
        await storage.renew_lease("r-dead", "127.0.0.1:2", 0.1)
        await storage.insert_session(a_session("left"), owner="r-dead")
        await asyncio.sleep(0.2)
        with pytest.raises(Unavailable):
            await replicas.start(adopt)
        assert await storage.claim_sessions(replicas.id) == []
        await replicas.sweep()
        assert adopted == ["refused", "left"]
    finally:
        await storage.close()


def spawn_replica(spawn, db: str, deadline: str = "60"):  # type: ignore[no-untyped-def]
    """A backup-server process (the one a test kills -9) with a one-second lease."""
    return spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", db,
        "--agent-deadline", deadline, "--replica-lease", "1",
    )  # fmt: skip


async def kill_mid_fan_out(
    doomed, survivor_address: str, session_id: str, received: int, policy_id: str = "p"
) -> tuple[pb.PolicySession, float]:
    """Starts `policy_id` on `doomed`, kills it -9 once `received` computers have the
    command, and returns the session as the survivor finishes it, with the seconds that took."""
    async with (
        grpc.aio.insecure_channel(doomed.address) as one,
        grpc.aio.insecure_channel(survivor_address) as two,
    ):
        on_doomed, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        request = api.StartPolicyRequest(policy_id=policy_id, session_id=session_id)
        caller = asyncio.ensure_future(on_doomed.StartPolicy(request))

        async def under_way() -> bool:
            try:
                found = await on_survivor.GetSession(api.GetSessionRequest(session_id=session_id))
            except grpc.aio.AioRpcError:
                return False
            return found.statistics.received >= received

        await wait_for(under_way, seconds=20)
        doomed.stop()  # SIGKILL
        killed = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await caller
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # The client's retry, on another replica, with the same session id.
        ended = await on_survivor.StartPolicy(request, timeout=30)
        return ended, time.monotonic() - killed


async def test_a_replica_killed_mid_fan_out_has_its_session_finished_by_another(
    spawn, start_server, start_agent, postgres_url: str, hung_addresses, tmp_path: Path, source_tree: Path
) -> None:
    """kill -9 of the replica running a session: within its lease another replica takes the session over, delivers its pending computers, and a retry with its session id returns it finished."""
    doomed = spawn_replica(spawn, postgres_url)
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=1.0)
    agents = [await start_agent(f"a{i}") for i in range(2)]
    computers = [(a.config.name, a.address) for a in agents]
    computers += [(f"h{i}", address) for i, address in enumerate(hung_addresses(3))]
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        await api_grpc.PolicyServiceStub(channel).CreatePolicy(
            api.CreatePolicyRequest(policy_id="p", policy=policy_over(computers, tmp_path, source_tree))
        )
    ended, took = await kill_mid_fan_out(doomed, survivor.address, "cut-short", received=2)
    assert took < 1.0 + 1.0 + 3.0  # lease + the survivor's deadline + slack
    assert ended.id == "cut-short" and ended.state == pb.SESSION_STATE_WARNING
    assert INTERRUPTED not in ended.warnings
    assert (ended.statistics.received, ended.statistics.not_received) == (2, 3)
    assert all(r.delivery != pb.DELIVERY_PENDING for r in ended.computer_results)


@pytest.mark.parametrize("kills", [pytest.param(2), pytest.param(10, marks=pytest.mark.slow)])
async def test_repeated_kills_mid_fan_out_leave_every_computer_delivered(
    kills: int, spawn, start_server, start_agent, postgres_url: str, hung_addresses, tmp_path: Path, source_tree: Path
) -> None:
    """Replica after replica killed -9 mid fan-out (2 in make test, 10 in make slow): every session finishes on the survivor with a delivery for every computer."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=1.0)
    agents = [await start_agent(f"a{i}") for i in range(2)]
    computers = [(a.config.name, a.address) for a in agents]
    computers += [(f"h{i}", address) for i, address in enumerate(hung_addresses(2))]
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        for kill in range(kills):
            policy = policy_over(computers, tmp_path, source_tree)
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id=f"p{kill}", policy=policy))
    for kill in range(kills):
        doomed = spawn_replica(spawn, postgres_url)
        ended, _ = await kill_mid_fan_out(
            doomed, survivor.address, f"kill-{kill}", received=2, policy_id=f"p{kill}"
        )
        assert ended.state == pb.SESSION_STATE_WARNING, ended
        assert (ended.statistics.received, ended.statistics.not_received) == (2, 2)


async def test_the_scheduler_runs_on_one_replica_and_moves_when_it_stops(
    start_server, postgres_url: str
) -> None:
    """Of two replicas exactly one is the scheduler's leader; when it stops, the other takes over."""
    first = await start_server(db=postgres_url)
    second = await start_server(db=postgres_url)
    leaders = [await server.replicas.is_leader() for server in (first, second)]
    assert sorted(leaders) == [False, True]
    leader, other = (first, second) if leaders[0] else (second, first)
    assert await leader.replicas.is_leader() and not await other.replicas.is_leader()
    await leader.stop()
    await wait_for(other.replicas.is_leader)
