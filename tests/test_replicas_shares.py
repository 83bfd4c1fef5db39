"""A session's computers shared between two replicas over one real PostgreSQL: each sends its
share, the receiving one answers with every computer, and a share or a session whose replica
is killed -9 is finished by the other, with one job per computer."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from test_replicas import delivery_of, spawn_replica

from agent_stub.fleet import Fleet
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.share_owners import owner_of

from conftest import policy_over, wait_for


async def share_counts(url: str, session_id: str) -> dict[str, int]:
    """How many of the session's rows each share holds ("" = the owner's)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select r.share, count(*) from computer_results r join sessions s"
            " on s.seq = r.session_seq where s.id = %s group by r.share",
            [session_id],
        )
        return {str(share): int(count) for share, count in await cursor.fetchall()}


def has_share(url: str, session_id: str, replica_id: str) -> Callable[[], Awaitable[bool]]:
    """A condition: the session is stored and `replica_id` has a share of it."""

    async def shared() -> bool:
        return (await share_counts(url, session_id)).get(replica_id, 0) > 0

    return shared


async def other_replica(url: str, known: str) -> str:
    """The id of the live replica that is not `known` (a spawned process's)."""

    async def found() -> bool:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute(
                "select id from replicas where id <> %s and expires_ns > %s",
                [known, time.time_ns()],
            )
            ids.extend(str(row[0]) for row in await cursor.fetchall())
        return bool(ids)

    ids: list[str] = []
    await wait_for(found, seconds=10)
    return ids[0]


def jobs_per_computer(fleet: Fleet, policy_id: str, session_id: str) -> set[int]:
    """The numbers of jobs the session started on each of the fleet's agents."""
    return {len(jobs.list(policy_id, session_id)) for jobs in fleet.jobs.values()}


def computers_of(fleet: Fleet, *addresses: str) -> list[tuple[str, str]]:
    agents = [(agent["name"], agent["address"]) for agent in fleet.addresses()["agents"]]
    return agents + [(f"down-{index}", address) for index, address in enumerate(addresses)]


async def test_two_replicas_each_deliver_their_share_and_the_receiver_answers_with_all(
    start_server, start_fleet, postgres_url: str, closed_address: str, hung_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """A session of 30 agents, a closed port and a silent computer on two replicas: the rows show each replica sent its own share (about half), the reply has every computer, and WatchSession on the other replica ends within a second of it."""
    first = await start_server(db=postgres_url, agent_deadline=1.5)
    second = await start_server(db=postgres_url, agent_deadline=1.5)
    fleet = await start_fleet(count=30, job_seconds=0.5)
    computers = computers_of(fleet, closed_address, hung_address)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
    ):
        on_first, on_second = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        policy = policy_over(computers, tmp_path, source_tree)
        await on_first.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        running = asyncio.ensure_future(
            on_first.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="shared"))
        )

        async def stored() -> bool:
            return bool((await on_second.ListSessions(api.ListSessionsRequest())).sessions)

        await wait_for(stored)
        seen: list[pb.PolicySession] = []
        # Until its delivery is over (the outcome is stored when the jobs are followed).
        async for snapshot in on_second.WatchSession(api.WatchSessionRequest(session_id="shared")):
            seen.append(snapshot)
            if snapshot.state != pb.SESSION_STATE_RUNNING:
                break
        watch_ended = time.monotonic()
        ended = await running
        replied = time.monotonic()
    assert watch_ended - replied < 1.0 + 0.5  # the bound on lag, and slack for the machine
    assert (ended.statistics.received, ended.statistics.not_received) == (30, 2)
    assert ended.statistics.pending == 0 and ended.state == pb.SESSION_STATE_WARNING
    assert delivery_of(seen[-1]) == delivery_of(ended)
    counts = await share_counts(postgres_url, "shared")
    assert set(counts) == {"", second.replicas.id}
    assert 6 <= counts[second.replicas.id] <= 26, counts  # about half of 32
    down = [r for r in ended.computer_results if r.computer.name.startswith("down-")]
    assert [r.delivery for r in down] == [pb.DELIVERY_NOT_RECEIVED] * 2
    assert jobs_per_computer(fleet, "p", "shared") == {1}


def split_by_owner(
    addresses: list[str], members: list[str], owner: str
) -> tuple[list[str], list[str]]:
    """The addresses `owner` owns among `members`, and the others."""
    mine = [address for address in addresses if owner_of(address, sorted(members)) == owner]
    return mine, [address for address in addresses if address not in mine]


@pytest.mark.parametrize("rounds", [pytest.param(2), pytest.param(10, marks=pytest.mark.slow)])
async def test_a_share_whose_replica_is_killed_is_delivered_by_the_receiving_one(
    rounds: int, spawn, start_server, start_fleet, postgres_url: str, hung_addresses, closed_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """kill -9 of the replica sending a share (2 rounds in make test, 10 in make slow): within its lease the receiving replica takes the share over and its reply has every computer delivered, one job each."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=1.0)
    fleet = await start_fleet(count=16, job_seconds=0.5)
    silent = hung_addresses(12)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        for kill in range(rounds):
            doomed = spawn_replica(spawn, postgres_url)
            doomed_id = await other_replica(postgres_url, survivor.replicas.id)
            members = [survivor.replicas.id, doomed_id]
            # Two silent computers in the doomed replica's share keep it sending (its
            # deadline is 60 s) until the kill; one in the survivor's.
            theirs, ours = split_by_owner(silent, members, doomed_id)
            computers = computers_of(fleet, closed_address, *theirs[:2], *ours[:1])
            policy = policy_over(computers, tmp_path, source_tree)
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id=f"p{kill}", policy=policy))
            request = api.StartPolicyRequest(policy_id=f"p{kill}", session_id=f"share-{kill}")
            caller = asyncio.ensure_future(service.StartPolicy(request, timeout=30))
            await wait_for(has_share(postgres_url, request.session_id, doomed_id), seconds=10)
            await asyncio.sleep(0.5)  # its agents answer and their rows are written
            doomed.stop()  # SIGKILL
            killed = time.monotonic()
            ended = await caller
            assert time.monotonic() - killed < 1.0 + 1.0 + 1.0 + 3.0  # lease, warm, deadline
            assert ended.statistics.pending == 0, ended
            assert (ended.statistics.received, ended.statistics.not_received) == (16, 4)
            assert all(r.delivery != pb.DELIVERY_PENDING for r in ended.computer_results)
            assert jobs_per_computer(fleet, f"p{kill}", request.session_id) == {1}
            stored = await service.GetSession(api.GetSessionRequest(session_id=request.session_id))
            assert delivery_of(stored) == delivery_of(ended)


async def test_a_receiving_replica_killed_leaves_its_session_finished_by_the_sharing_one(
    spawn, start_server, start_fleet, postgres_url: str, hung_addresses, closed_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """kill -9 of the replica that received StartPolicy while both send their shares: the other claims the session, sends the dead one's share again, and a retry with the same session_id on it returns the session finished, one job per computer."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=1.0)
    doomed = spawn_replica(spawn, postgres_url)
    doomed_id = await other_replica(postgres_url, survivor.replicas.id)
    fleet = await start_fleet(count=16, job_seconds=0.5)
    theirs, ours = split_by_owner(hung_addresses(12), [survivor.replicas.id, doomed_id], doomed_id)
    computers = computers_of(fleet, closed_address, *theirs[:2], *ours[:1])
    async with (
        grpc.aio.insecure_channel(doomed.address) as one,
        grpc.aio.insecure_channel(survivor.address) as two,
    ):
        on_doomed, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        policy = policy_over(computers, tmp_path, source_tree)
        await on_survivor.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        request = api.StartPolicyRequest(policy_id="p", session_id="owner-killed")
        caller = asyncio.ensure_future(on_doomed.StartPolicy(request))
        await wait_for(has_share(postgres_url, request.session_id, survivor.replicas.id), seconds=10)
        await asyncio.sleep(0.5)  # its agents answer and their rows are written
        doomed.stop()  # SIGKILL
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await caller
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        ended = await on_survivor.StartPolicy(request, timeout=30)  # the client's retry
    assert ended.id == "owner-killed" and ended.statistics.pending == 0
    assert (ended.statistics.received, ended.statistics.not_received) == (16, 4)
    assert ended.state == pb.SESSION_STATE_WARNING
    assert jobs_per_computer(fleet, "p", "owner-killed") == {1}
