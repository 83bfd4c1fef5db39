"""A stop never overtakes its start across replicas over one real PostgreSQL: when a
computer's owner changed between the two (a third replica joined, or the start's sharing
replica was killed -9), the stop still reaches each agent after its start, and every job
the start began ends stopped."""

import asyncio
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from storage_conformance import a_session
from test_replicas import spawn_replica
from test_replicas_shares import (
    computers_of,
    has_share,
    other_replica,
    share_counts,
    split_by_owner,
)

from agent_stub.fleet import Fleet
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.sessions import LiveSession
from backup_server.stop_order import EarlierStarts
from backup_server.storage.sqlite import SqliteStorage

from conftest import policy_over, wait_for


def jobs_of(fleet: Fleet, policy_id: str, session_id: str) -> dict[str, list[pb.Job]]:
    """The jobs the session started, by agent address (as the agents themselves list them)."""
    return {address: jobs.list(policy_id, session_id) for address, jobs in fleet.jobs.items()}


def still_running(fleet: Fleet, policy_id: str) -> list[str]:
    """The agents with a job of the policy still running, whatever session started it."""
    return [
        address
        for address, jobs in fleet.jobs.items()
        if any(job.state == pb.JOB_STATE_RUNNING for job in jobs.list(policy_id))
    ]


def every_begun_job_stopped(
    fleet: Fleet, policy_id: str, started: pb.PolicySession, stopped: pb.PolicySession
) -> None:
    """Asserts what the agents say: each job the start began is STOPPED, by the stop; a
    start command the stop found not yet sent (queued, or claimed and warming up) is
    cancelled and began no job; no agent runs a job of the policy."""
    begun = jobs_of(fleet, policy_id, started.id)
    stop_detail = {r.computer.address: r.detail for r in stopped.computer_results}
    for result in started.computer_results:
        jobs = begun.get(result.computer.address, [])
        assert len(jobs) <= 1 and all(job.state == pb.JOB_STATE_STOPPED for job in jobs), result
        if result.delivery == pb.DELIVERY_RECEIVED:
            assert jobs, result
            assert stop_detail[result.computer.address] == f"OK: job {jobs[0].id} stopped"
        else:
            assert result.delivery in (pb.DELIVERY_CANCELLED, pb.DELIVERY_NOT_RECEIVED), result
    assert still_running(fleet, policy_id) == []


async def pending_rows(url: str, session_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select count(*) from computer_results r join sessions s on s.seq = r.session_seq"
            " where s.id = %s and r.delivery = %s",
            [session_id, pb.DELIVERY_PENDING],
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_a_stop_after_a_third_replica_joined_stops_every_job_its_start_began(
    postgres_url: str, spawn, start_server, start_fleet, closed_address: str, hung_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """A start shared by two replicas (one a process) whose agents take 3 s to take a StartJob, then a third replica joins and a stop is stored while every start is on the wire: the third replica's share of the stop (computers whose start another replica sends) waits for those starts, so every job the start began is reported stopped by its agent."""
    first = await start_server(db=postgres_url, agent_deadline=5.0)
    spawn_replica(spawn, postgres_url, deadline="5")
    second_id = await other_replica(postgres_url, first.replicas.id)
    fleet = await start_fleet(count=24, start_delay=3.0)
    computers = computers_of(fleet, closed_address, hung_address)
    async with grpc.aio.insecure_channel(first.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers, tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        starting = asyncio.ensure_future(
            service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="begin"))
        )
        await wait_for(has_share(postgres_url, "begin", second_id), seconds=10)
        third = await start_server(db=postgres_url, agent_deadline=5.0)
        # What this test is about: the starts are still on the wire as the stop is stored.
        assert not starting.done() and await pending_rows(postgres_url, "begin") > 2
        stopped = await service.StopPolicy(
            api.StopPolicyRequest(policy_id="p", session_id="halt"), timeout=60
        )
        started = await starting
    halt_shares = await share_counts(postgres_url, "halt")
    assert halt_shares.get(third.replicas.id, 0) > 0, halt_shares  # owners did change
    assert third.replicas.id not in await share_counts(postgres_url, "begin")
    assert started.statistics.not_received == 2 and started.statistics.pending == 0
    assert (stopped.statistics.received, stopped.statistics.not_received) == (24, 2)
    every_begun_job_stopped(fleet, "p", started, stopped)


@pytest.mark.parametrize("rounds", [pytest.param(1), pytest.param(5, marks=pytest.mark.slow)])
async def test_a_stop_right_after_the_sharing_replica_is_killed_leaves_no_job_running(
    rounds: int, postgres_url: str, spawn, start_server, start_fleet, hung_addresses, closed_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """kill -9 of the replica sending a start's share while its StartJobs are on the wire, and a stop stored right after (1 round in make test, 5 in make slow): the survivor claims both sessions' rows of the dead replica, and once the stop and the claims are done no agent runs a job of that start."""
    survivor = await start_server(db=postgres_url, replica_lease=1.0, agent_deadline=2.0)
    fleet = await start_fleet(count=16, start_delay=0.5)
    silent = hung_addresses(12)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        for kill in range(rounds):
            doomed = spawn_replica(spawn, postgres_url)
            doomed_id = await other_replica(postgres_url, survivor.replicas.id)
            theirs, ours = split_by_owner(silent, [survivor.replicas.id, doomed_id], doomed_id)
            computers = computers_of(fleet, closed_address, *theirs[:2], *ours[:1])
            policy_id, start_id = f"p{kill}", f"b-start-{kill}"
            # The stop's id sorts first: a claimer finds its share before the start's, the
            # order in which a stop would overtake the start it claims with it.
            stop_id = f"a-stop-{kill}"
            policy = policy_over(computers, tmp_path, source_tree)
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))
            starting = asyncio.ensure_future(
                service.StartPolicy(
                    api.StartPolicyRequest(policy_id=policy_id, session_id=start_id), timeout=60
                )
            )
            await wait_for(has_share(postgres_url, start_id, doomed_id), seconds=10)
            await asyncio.sleep(0.3)  # it polled its share: its StartJobs are on the wire
            doomed.stop()  # SIGKILL
            killed = time.monotonic()
            stopped = await service.StopPolicy(
                api.StopPolicyRequest(policy_id=policy_id, session_id=stop_id), timeout=60
            )
            started = await starting
            assert time.monotonic() - killed < 20
            # The dead replica's rows of the start were claimed (and so sent again) here.
            assert survivor.replicas.id in await share_counts(postgres_url, start_id)
            assert started.statistics.pending == 0 and stopped.statistics.pending == 0
            assert (stopped.statistics.received, stopped.statistics.not_received) == (16, 4)
            every_begun_job_stopped(fleet, policy_id, started, stopped)


async def test_a_stop_waits_for_an_earlier_starts_row_no_longer_than_its_bound(tmp_path: Path) -> None:
    """EarlierStarts over a real SQLite file: a computer pending in an earlier start waits until its row is written, one delivered on this replica does not wait, and a row nobody writes holds the stop only until the bound."""
    storage = await SqliteStorage.open(tmp_path / "server.db")
    try:
        await storage.insert_session(a_session("begin", computers=3), owner="r-me")
        halt = a_session("halt", computers=3)
        halt.action = pb.SESSION_ACTION_STOP
        await storage.insert_session(halt, owner="r-me")
        here = LiveSession(await storage.get_session("begin"))
        here.record(0, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j0")
        started = time.monotonic()
        order = EarlierStarts(storage, "halt", lambda sid: [here] if sid == "begin" else [], 1.5)
        await asyncio.wait_for(order.finished_with("127.0.0.1:1000"), 0.5)  # delivered here
        waiting = asyncio.ensure_future(order.finished_with("127.0.0.1:1001"))
        stuck = asyncio.ensure_future(order.finished_with("127.0.0.1:1002"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and not stuck.done()
        elsewhere = LiveSession(await storage.get_session("begin"))
        elsewhere.record(1, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j1")
        await storage.save_share("begin", elsewhere.take_progress().results)
        await asyncio.wait_for(waiting, 0.5)
        assert not stuck.done()
        await asyncio.wait_for(stuck, 2.0)
        assert 1.5 <= time.monotonic() - started < 3.0
    finally:
        await storage.close()
