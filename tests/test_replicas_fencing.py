"""Fencing over one real PostgreSQL: a replica whose lease lapsed while it kept running has its
writes for the sessions and shares another replica claimed refused, and stands down."""

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from outcome_support import watch_outcome
from storage_conformance import a_session
from test_replicas import spawn_replica
from test_replicas_follow import followed_here
from test_replicas_shares import (
    computers_of,
    has_share,
    jobs_per_computer,
    other_replica,
    share_counts,
)

from backup.errors import Fenced, Unavailable
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.sessions import LiveSession, ResultChange
from backup_server.storage.postgres import PostgresStorage

from conftest import policy_over, wait_for

# Longer than a spawned replica's 1 s lease and the others' claim (every third of theirs).
STALL_SECONDS = 3.0


def delivered(position: int) -> ResultChange:
    return ResultChange(position, pb.DELIVERY_RECEIVED, "OK: by the lapsed replica", 5, "")


async def test_a_save_by_a_replica_that_no_longer_owns_the_work_is_refused_and_changes_nothing(
    postgres_url: str,
) -> None:
    """A session claimed from a replica whose lease lapsed: that replica's progress save, share write and followed write are Fenced (naming the rows) and change nothing; the claimer's save goes through."""
    storage = await PostgresStorage.open(postgres_url, 2)
    try:
        await storage.renew_lease("r-lapsed", "127.0.0.1:1", 0.1)
        await storage.insert_session(a_session("s", computers=4), owner="r-lapsed")
        await storage.assign_shares("s", {"r-lapsed": [2, 3]})
        before = await storage.get_session("s")
        await asyncio.sleep(0.2)
        assert await storage.claim_sessions("r-claimer") == ["s"]
        assert await storage.claim_shares("r-claimer") == {"s": [2, 3]}
        late = LiveSession(await storage.get_session("s"))
        late.record(0, pb.DELIVERY_RECEIVED, "OK: by the lapsed replica", 5)
        with pytest.raises(Fenced):
            await storage.save_progress(late.take_progress(), owner="r-lapsed")
        with pytest.raises(Fenced) as refused:
            await storage.save_share("s", [delivered(2), delivered(3)], share="r-lapsed")
        assert refused.value.positions == (2, 3)
        with pytest.raises(Fenced) as refused:
            await storage.save_followed("s", [delivered(3)], [], [3], share="r-lapsed")
        assert refused.value.positions == (3,)
        assert await storage.get_session("s") == before
        mine = LiveSession(await storage.get_session("s"))
        mine.record(1, pb.DELIVERY_NOT_RECEIVED, "DEADLINE_EXCEEDED: by the claimer", 7)
        await storage.save_progress(mine.take_progress(), owner="r-claimer")
        await storage.save_share("s", [delivered(2)], share="r-claimer")
        stored = await storage.get_session("s")
        assert [r.delivery for r in stored.computer_results] == [
            pb.DELIVERY_PENDING,
            pb.DELIVERY_NOT_RECEIVED,
            pb.DELIVERY_RECEIVED,
            pb.DELIVERY_PENDING,
        ]
        assert stored.statistics.not_received == 1
    finally:
        await storage.close()


def rows_of(session: pb.PolicySession) -> list[tuple[str, int, str, int]]:
    """Each computer's row as its sender wrote it: address, delivery, detail, latency."""
    return [
        (r.computer.address, r.delivery, r.detail, r.latency.ToNanoseconds())
        for r in session.computer_results
    ]


def header_of(session: pb.PolicySession) -> tuple[int, int, int, int, int]:
    stats = session.statistics
    return (session.state, session.end_time.ToNanoseconds(), stats.pending, stats.received, stats.not_received)


async def owner_of_session(url: str, session_id: str) -> str:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("select owner from sessions where id = %s", [session_id])
        row = await cursor.fetchone()
        return str(row[0]) if row else ""


def stall(process) -> None:  # type: ignore[no-untyped-def]
    """Stops the replica process (its event loop, its renewals, everything) as a stalled
    machine would."""
    os.kill(process.popen.pid, signal.SIGSTOP)


def resume(process) -> None:  # type: ignore[no-untyped-def]
    os.kill(process.popen.pid, signal.SIGCONT)


async def stood_down(process, words: str) -> bool:  # type: ignore[no-untyped-def]
    return words in process.log.read_text()


async def test_a_receiving_replica_stalled_past_its_lease_stands_down_for_the_claimer(
    spawn, start_server, start_fleet, postgres_url: str, tmp_path: Path, source_tree: Path
) -> None:
    """A replica stopped (SIGSTOP) past its lease mid fan-out while its StartJobs are on the wire: the other claims and finishes its session; resumed, the stalled one's writes are refused, it logs that it stood down, its caller gets the claimer's session, the stored session stays the claimer's, one job per computer, and, renewed, it takes new work."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=4.0)
    lapsing = spawn_replica(spawn, postgres_url)
    lapsing_id = await other_replica(postgres_url, survivor.replicas.id)
    # Each agent takes 2 s to answer a StartJob: the stalled replica's are on the wire.
    fleet = await start_fleet(count=12, start_delay=2.0)
    async with (
        grpc.aio.insecure_channel(lapsing.address) as one,
        grpc.aio.insecure_channel(survivor.address) as two,
    ):
        on_lapsing, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        policy = policy_over(computers_of(fleet), tmp_path, source_tree)
        await on_survivor.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        request = api.StartPolicyRequest(policy_id="p", session_id="lapsed")
        caller = asyncio.ensure_future(on_lapsing.StartPolicy(request, timeout=60))
        await wait_for(has_share(postgres_url, "lapsed", survivor.replicas.id), seconds=10)
        await asyncio.sleep(0.5)  # its StartJobs are on the wire, none answered yet
        stall(lapsing)
        stalled = time.monotonic()

        async def finished_by_the_survivor() -> bool:
            found = await on_survivor.GetSession(api.GetSessionRequest(session_id="lapsed"))
            return found.state != pb.SESSION_STATE_RUNNING

        await wait_for(finished_by_the_survivor, seconds=20)
        assert await owner_of_session(postgres_url, "lapsed") == survivor.replicas.id
        claimed = await on_survivor.GetSession(api.GetSessionRequest(session_id="lapsed"))
        await asyncio.sleep(max(0.0, STALL_SECONDS - (time.monotonic() - stalled)))
        resume(lapsing)
        await wait_for(lambda: stood_down(lapsing, "this replica stood down"), seconds=10)
        answered = await caller
        await asyncio.sleep(1.0)  # a write the stalled replica still had to make lands now
        stored = await on_survivor.GetSession(api.GetSessionRequest(session_id="lapsed"))
        assert answered.id == "lapsed" and answered.statistics.pending == 0
        assert rows_of(answered) == rows_of(claimed)
        assert rows_of(stored) == rows_of(claimed) and header_of(stored) == header_of(claimed)
        assert claimed.statistics.received == 12
        assert jobs_per_computer(fleet, "p", "lapsed") == {1}
        assert await owner_of_session(postgres_url, "lapsed") == survivor.replicas.id
        log = lapsing.log.read_text()
        assert log.count("session lapsed: this replica stood down") == 1, log

        # Renewed, it is live again with no claimed work and takes a new session.
        await wait_for(lambda: other_replica_is(postgres_url, survivor.replicas.id, lapsing_id))
        again = await on_lapsing.StartPolicy(
            api.StartPolicyRequest(policy_id="p", session_id="after"), timeout=30
        )
        assert again.statistics.received == 12


async def other_replica_is(url: str, known: str, expected: str) -> bool:
    return await other_replica(url, known) == expected


async def test_a_sharing_replica_stalled_past_its_lease_stands_down_from_its_share(
    spawn, start_server, start_fleet, postgres_url: str, tmp_path: Path, source_tree: Path
) -> None:
    """A replica sending its share stopped (SIGSTOP) past its lease: the receiving one claims the share and answers with every computer; resumed, the stalled one's share write is refused, it logs that it stood down from its share, the rows stay the claimer's, one job per computer."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=4.0)
    lapsing = spawn_replica(spawn, postgres_url)
    lapsing_id = await other_replica(postgres_url, survivor.replicas.id)
    fleet = await start_fleet(count=12, start_delay=2.0)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers_of(fleet), tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        request = api.StartPolicyRequest(policy_id="p", session_id="shared")
        caller = asyncio.ensure_future(service.StartPolicy(request, timeout=60))
        await wait_for(has_share(postgres_url, "shared", lapsing_id), seconds=10)
        await asyncio.sleep(0.5)  # the stalled replica polled its share; its StartJobs are on the wire
        stall(lapsing)
        ended = await caller
        assert ended.statistics.received == 12 and ended.statistics.pending == 0
        resume(lapsing)
        await wait_for(lambda: stood_down(lapsing, "stood down from its share"), seconds=10)
        await asyncio.sleep(1.0)
        stored = await service.GetSession(api.GetSessionRequest(session_id="shared"))
    assert rows_of(stored) == rows_of(ended)
    assert jobs_per_computer(fleet, "p", "shared") == {1}
    assert lapsing.log.read_text().count("session shared: this replica stood down") == 1


async def test_a_replica_that_knows_its_lease_lapsed_starts_no_session_until_it_renews(
    start_server, start_agent, postgres_url: str, tmp_path: Path, source_tree: Path, monkeypatch
) -> None:
    """A replica whose renewals fail for longer than its lease answers StartPolicy UNAVAILABLE naming the lease (storing nothing), and starts sessions again once a renewal lands."""
    server = await start_server(db=postgres_url, replica_lease=1.0)
    agent = await start_agent("a1")

    async def unreachable(*args: object) -> None:
        raise Unavailable("the server's database cannot be reached")

    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over([("a1", agent.address)], tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        monkeypatch.setattr(server.storage, "renew_lease", unreachable)
        await wait_for(lambda: lapsed(server), seconds=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="late"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "lease" in (raised.value.details() or "")
        listed = await service.ListSessions(api.ListSessionsRequest(policy_id="p"))
        assert not listed.sessions
        monkeypatch.undo()
        await wait_for(lambda: renewed(server), seconds=5)
        ended = await service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="late"))
    assert ended.statistics.received == 1


async def test_a_replica_back_from_a_lapse_renews_before_it_leads_or_starts(
    start_server, postgres_url: str
) -> None:
    """While its lease has lapsed and cannot be renewed the replica does not lead (its
    scheduler would start runs only to have them refused); once the database takes a
    renewal again it renews at the scheduler's next look, before its renewal loop does."""
    server = await start_server(db=postgres_url, replica_lease=1.0)

    async def unreachable(*args: object) -> None:
        raise Unavailable("the server's database cannot be reached")

    renew = server.storage.renew_lease
    server.storage.renew_lease = unreachable
    await wait_for(lambda: lapsed(server), seconds=5)
    assert not await server.replicas.is_leader()
    server.storage.renew_lease = renew
    assert await server.replicas.is_leader()
    assert server.replicas.lease_holds()


async def lapsed(server) -> bool:  # type: ignore[no-untyped-def]
    return not server.replicas.lease_holds()


async def renewed(server) -> bool:  # type: ignore[no-untyped-def]
    return bool(server.replicas.lease_holds())


async def test_a_replica_stalled_past_its_lease_while_following_its_share_stands_down_from_it(
    spawn, start_server, start_fleet, postgres_url: str, tmp_path: Path, source_tree: Path
) -> None:
    """A replica following its share's jobs stopped (SIGSTOP) past its lease: the receiving one claims those rows and follows them; resumed, the stalled one's followed writes are refused, it logs once that it stood down, and the outcome settles complete, one job per agent."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=1.0)
    lapsing = spawn_replica(spawn, postgres_url, deadline="1")
    lapsing_id = await other_replica(postgres_url, survivor.replicas.id)
    # The jobs end after the stalled replica resumes: its streams then bring their ends.
    fleet = await start_fleet(count=12, job_seconds=STALL_SECONDS + 4)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers_of(fleet), tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        reply = await service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="f"))
        assert reply.outcome == pb.SESSION_STATE_RUNNING
        assert (await share_counts(postgres_url, "f")).get(lapsing_id, 0) > 0
        await asyncio.sleep(0.5)  # its followers are open
        stall(lapsing)

        async def taken_over() -> bool:
            return bool(followed_here(survivor, "f")[1])

        await wait_for(taken_over, seconds=STALL_SECONDS)
        await asyncio.sleep(0.5)
        resume(lapsing)
        snapshots = await watch_outcome(service, "f", 30)
        await wait_for(lambda: stood_down(lapsing, "stood down from the followed"), seconds=10)
    final = snapshots[-1]
    assert final.outcome == pb.SESSION_STATE_SUCCESS and final.statistics.jobs_succeeded == 12
    assert jobs_per_computer(fleet, "p", "f") == {1}
    assert lapsing.log.read_text().count("session f: this replica stood down") == 1
