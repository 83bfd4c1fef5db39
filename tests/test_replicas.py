"""Several server replicas over one real PostgreSQL: every RPC on every replica, watching across
replicas, retries with the same session id, leases, leadership, and a replica killed -9."""

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from storage_conformance import a_session

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.interface import INTERRUPTED
from backup_server.storage.postgres import PostgresStorage

from conftest import policy_over, wait_for


async def test_every_rpc_works_on_every_replica_and_watch_follows_a_session_run_elsewhere(
    start_server, start_agent, postgres_url: str, slow_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """A policy made on one replica is served by the other, whose WatchSession streams the session the first runs, ending within a second of it."""
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
        assert seen[-1] == ended and ended.statistics.received == 1
        assert await on_second.GetSession(api.GetSessionRequest(session_id="s1")) == ended


async def test_a_retry_on_another_replica_returns_the_session_the_first_runs(
    start_server, start_agent, postgres_url: str, slow_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """StartPolicy with the same session id on a second replica waits for the first's session and returns it; the agent gets one job."""
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
        request = api.StartPolicyRequest(policy_id="p", session_id="retried")
        running = asyncio.ensure_future(on_first.StartPolicy(request))
        await asyncio.sleep(0.3)
        retried = await on_second.StartPolicy(request)
        assert retried == await running
        assert retried.state != pb.SESSION_STATE_RUNNING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await on_second.StopPolicy(api.StopPolicyRequest(policy_id="p", session_id="retried"))
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    jobs = [r.job_id for r in retried.computer_results if r.job_id]
    assert len(jobs) == 1


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


async def test_a_replica_killed_mid_session_leaves_no_session_running(
    spawn, start_server, postgres_url: str, hung_addresses, tmp_path: Path, source_tree: Path
) -> None:
    """kill -9 of the replica running a session: within its lease another replica marks it FAILED (interrupted), and a retry with its session id returns it."""
    doomed = spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", postgres_url,
        "--agent-deadline", "60", "--replica-lease", "1",
    )  # fmt: skip
    survivor = await start_server(db=postgres_url, replica_lease=1.0)
    policy = policy_over([(f"h{i}", a) for i, a in enumerate(hung_addresses(3))], tmp_path, source_tree)
    async with (
        grpc.aio.insecure_channel(doomed.address) as one,
        grpc.aio.insecure_channel(survivor.address) as two,
    ):
        on_doomed, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        await on_doomed.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        request = api.StartPolicyRequest(policy_id="p", session_id="cut-short")
        caller = asyncio.ensure_future(on_doomed.StartPolicy(request))

        async def running() -> bool:
            try:
                found = await on_survivor.GetSession(api.GetSessionRequest(session_id="cut-short"))
            except grpc.aio.AioRpcError:
                return False
            return found.state == pb.SESSION_STATE_RUNNING

        await wait_for(running)
        doomed.stop()  # SIGKILL
        killed = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await caller
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        ended = await on_survivor.StartPolicy(request, timeout=30)
        assert time.monotonic() - killed < 5.0
    assert ended.id == "cut-short" and ended.state == pb.SESSION_STATE_FAILED
    assert INTERRUPTED in ended.warnings
    assert ended.statistics.pending == 3
