"""Following shared like sending: after delivery each replica follows the jobs of its own
share of a session over its own channels, the session's owner settles the outcome from
the rows, and a replica killed -9 while following has its share taken over by a live one;
real replicas over one real PostgreSQL, the fleet simulator's jobs of a few seconds, a
closed port and a silent listener among the computers."""

import asyncio
import logging
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from outcome_support import outcome_final, watch_outcome
from storage_conformance import a_session
from test_replicas import spawn_replica
from test_replicas_shares import jobs_per_computer, other_replica

from agent_stub.fleet import Fleet
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer
from backup_server.sessions import LiveSession
from backup_server.storage.postgres import PostgresStorage

from conftest import RECONCILE_FOR, policy_over, wait_for

log = logging.getLogger("tests.replicas_follow")

LEASE = 1.0
JOB_SECONDS = 3.0
AGENTS = 16


async def shares_by_position(url: str, session_id: str) -> list[str]:
    """Each computer row's share, in position order ("" = the session's owner)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select r.share from computer_results r join sessions s on s.seq = r.session_seq"
            " where s.id = %s order by r.position",
            [session_id],
        )
        return [str(share) for (share,) in await cursor.fetchall()]


async def a_policy(
    service: api_grpc.PolicyServiceStub, fleet: Fleet, tmp_path: Path, *unreachable: str
) -> dict[str, str]:
    """Policy "p" over the fleet's agents and the unreachable addresses; agents by address."""
    agents = {agent["address"]: agent["name"] for agent in fleet.addresses()["agents"]}
    computers = [(name, address) for address, name in agents.items()]
    computers += [(f"down-{index}", address) for index, address in enumerate(unreachable)]
    policy = policy_over(computers, tmp_path, tmp_path / "src")
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
    return agents


def followed_here(server: BackupServer, session_id: str) -> tuple[list[int], list[int]]:
    """The positions `server` follows as the session's owner, and as a share's replica."""
    followed = server.followed
    assert followed is not None and followed.shares is not None
    return (
        followed.tracker.follower.positions(session_id),
        followed.shares.follower.positions(session_id),
    )


def assert_complete(session: pb.PolicySession, agents: dict[str, str]) -> None:
    """Every agent's job succeeded and the two unreachable computers were not reached."""
    assert outcome_final(session), session
    jobs = {r.computer.address: r.job.state for r in session.computer_results}
    assert all(jobs[address] == pb.JOB_STATE_SUCCEEDED for address in agents), jobs
    stats = session.statistics
    assert (stats.jobs_succeeded, stats.not_received) == (len(agents), 2), stats
    assert session.outcome == pb.SESSION_STATE_WARNING


async def assert_statuses(service: api_grpc.PolicyServiceStub, agents: dict[str, str]) -> None:
    """The statuses the jobs' ends changed are stored: each agent's last job succeeded."""
    statuses = await service.ListComputerStatuses(api.ListComputerStatusesRequest(policy_id="p"))
    last = {s.computer.address: s for s in statuses.computer_statuses}
    for address in agents:
        assert last[address].last_job.state == pb.JOB_STATE_SUCCEEDED, last[address]
        assert last[address].consecutive_failures == 0


async def test_each_replica_follows_only_its_own_share(
    start_server, start_fleet, postgres_url: str, closed_address: str, hung_address: str,
    tmp_path: Path,
) -> None:
    """Two replicas share a session: each opens WatchJob streams (and reconciles) only for the computers of its own share, none twice; the owner's outcome, read on either replica, is complete and final only with the statuses stored."""
    first = await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    second = await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    fleet = await start_fleet(count=AGENTS, job_seconds=JOB_SECONDS)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
    ):
        on_first, on_second = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        agents = await a_policy(on_first, fleet, tmp_path, closed_address, hung_address)
        reply = await on_first.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s"))
        assert reply.state != pb.SESSION_STATE_RUNNING
        assert reply.outcome == pb.SESSION_STATE_RUNNING  # the jobs run on
        shares = await shares_by_position(postgres_url, "s")
        address_at = [r.computer.address for r in reply.computer_results]
        # What needs following: every agent's job, and the silent computer reconciled.
        wanted = {p for p, a in enumerate(address_at) if a in agents or a == hung_address}
        owner_share = {p for p in wanted if shares[p] == ""}
        second_share = {p for p in wanted if shares[p] == second.replicas.id}
        assert owner_share and second_share and owner_share | second_share == wanted

        async def both_follow() -> bool:
            own, _ = followed_here(first, "s")
            _, shared = followed_here(second, "s")
            return set(own) == owner_share and set(shared) == second_share

        await wait_for(both_follow, seconds=5)
        # Nobody follows another's share: the owner follows no share, the other no owner's.
        assert followed_here(first, "s")[1] == [] and followed_here(second, "s")[0] == []
        assert second.followed is not None and first.followed is not None
        assert second.followed.followed_jobs == len(second_share)
        assert first.followed.followed_jobs == len(owner_share)
        watched = await asyncio.gather(watch_outcome(on_first, "s"), watch_outcome(on_second, "s"))
        for snapshots in watched:
            assert_complete(snapshots[-1], agents)
            # No snapshot shows a final outcome before the end of every job.
            for snapshot in snapshots:
                if outcome_final(snapshot):
                    assert snapshot.statistics.jobs_running == 0
        await assert_statuses(on_second, agents)
    assert jobs_per_computer(fleet, "p", "s") == {1}


async def test_short_jobs_of_a_shared_session_settle_on_both_replicas(
    start_server, start_fleet, postgres_url: str, closed_address: str, hung_address: str,
    tmp_path: Path,
) -> None:
    """Jobs that end within a moment of their delivery (while the owner still merges the other share's rows) settle complete, three sessions in a row: the owner never writes a stale copy over the follower's row."""
    first = await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    fleet = await start_fleet(count=AGENTS, job_seconds=0.2)
    async with grpc.aio.insecure_channel(first.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        agents = await a_policy(service, fleet, tmp_path, closed_address, hung_address)
        for index in range(3):
            request = api.StartPolicyRequest(policy_id="p", session_id=f"short-{index}")
            await service.StartPolicy(request)
            assert_complete((await watch_outcome(service, request.session_id, 30))[-1], agents)
        await assert_statuses(service, agents)


@pytest.mark.parametrize("rounds", [pytest.param(2), pytest.param(8, marks=pytest.mark.slow)])
async def test_the_non_receiving_replica_killed_while_following_has_its_share_taken_over(
    rounds: int, spawn, start_server, start_fleet, postgres_url: str, closed_address: str,
    hung_address: str, tmp_path: Path,
) -> None:
    """kill -9 of the replica following its share's jobs (2 rounds in make test, 8 in make slow): the receiving replica claims that share's rows within a lease and a third, follows them over its own channels, and the outcome settles complete, one job per agent."""
    survivor = await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    fleet = await start_fleet(count=AGENTS, job_seconds=JOB_SECONDS + 2)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        agents = await a_policy(service, fleet, tmp_path, closed_address, hung_address)
        for kill in range(rounds):
            doomed = spawn_replica(spawn, postgres_url, deadline="1")
            doomed_id = await other_replica(postgres_url, survivor.replicas.id)
            session_id = f"k{kill}"
            request = api.StartPolicyRequest(policy_id="p", session_id=session_id)
            reply = await service.StartPolicy(request)
            assert reply.outcome == pb.SESSION_STATE_RUNNING
            shares = await shares_by_position(postgres_url, session_id)
            assert doomed_id in shares, shares
            await asyncio.sleep(0.5)  # its followers are open
            doomed.stop()  # SIGKILL
            killed = time.monotonic()

            async def taken_over() -> bool:
                return bool(followed_here(survivor, session_id)[1])  # noqa: B023

            await wait_for(taken_over, seconds=LEASE * 4 / 3 + 5)
            took_over = time.monotonic() - killed
            _, shared = followed_here(survivor, session_id)
            assert set(shared) <= {p for p, share in enumerate(shares) if share == doomed_id}
            snapshots = await watch_outcome(service, session_id, 30)
            settled = time.monotonic() - killed
            log.info("round %d: share taken over %.2f s, outcome %.2f s after the kill",
                     kill, took_over, settled)  # fmt: skip
            assert_complete(snapshots[-1], agents)
            await assert_statuses(service, agents)
            assert took_over < LEASE * 4 / 3 + 3.0, took_over
            assert settled < LEASE * 4 / 3 + JOB_SECONDS + 2 + RECONCILE_FOR + 3.0, settled
            assert jobs_per_computer(fleet, "p", session_id) == {1}


async def test_a_dead_replicas_followed_rows_are_claimed_once(postgres_url: str) -> None:
    """claim_followed_shares leaves a live replica's followed rows alone and gives a dead one's rows not done to exactly one of two claimers at once."""
    storage = await PostgresStorage.open(postgres_url, 2)
    try:
        await storage.renew_lease("r-dead", "127.0.0.1:1", 0.5)
        for claimer in ("r-a", "r-b"):
            await storage.renew_lease(claimer, "127.0.0.1:2", 30)
        session = a_session("followed", computers=3)
        session.outcome = pb.SESSION_STATE_RUNNING
        await storage.insert_session(session, owner="r-owner")
        await storage.assign_shares("followed", {"r-dead": [0, 1, 2]})
        live = LiveSession(await storage.get_session("followed"))
        for result in live.session.computer_results:
            result.delivery = pb.DELIVERY_RECEIVED
        live.dirty.extend([0, 1, 2])
        await storage.save_followed("followed", live.take_progress().results, [], [2])
        assert await storage.claim_followed_shares("r-a") == {}  # its lease holds
        await asyncio.sleep(0.6)
        claims = await asyncio.gather(
            storage.claim_followed_shares("r-a"), storage.claim_followed_shares("r-b")
        )
        assert sorted(claims, key=len) == [{}, {"followed": [0, 1]}]
        assert await storage.claim_followed_shares("r-c") == {}  # the claimer's lease holds
    finally:
        await storage.close()


pytestmark = pytest.mark.timeout(120)
