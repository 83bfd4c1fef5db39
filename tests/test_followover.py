"""Followed jobs fail over: a replica that dies (kill -9) has the sessions whose jobs it
followed claimed and settled by a live one, and no two live replicas follow one session;
real replica processes over one real PostgreSQL, the fleet simulator's jobs of a few seconds."""

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from outcome_support import outcome_final, watch_outcome
from storage_conformance import a_session
from test_replicas import spawn_replica

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.postgres import PostgresStorage

from conftest import RECONCILE_FOR, policy_over

LEASE = 1.0
JOB_SECONDS = 4.0
RESUMED = "resuming following its jobs"
ADOPTED = "taken over from a replica that stopped"


def resumed(caplog: pytest.LogCaptureFixture, session_id: str) -> int:
    """How many times a replica in this process took `session_id` over: to follow it from
    its record, or (killed before its delivery was stored as ended) to finish delivering
    it, after which the same replica follows it."""
    return sum(
        1
        for record in caplog.records
        if (record.name == "backup_server.followed"
            and record.getMessage() == f"session {session_id}: {RESUMED}")
        or (record.name == "backup_server.control"
            and record.getMessage().startswith(f"session {session_id}: {ADOPTED};"))
    )


async def policies_on_fleets(
    service: api_grpc.PolicyServiceStub, start_fleet, tmp_path: Path, unreachable: list[tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """Policy "ok" (two agents whose jobs succeed, plus the unreachable computers) and
    "bad" (two whose jobs fail), jobs of JOB_SECONDS; each policy's agents by address."""
    made = {}
    for policy_id, fail in (("ok", 0.0), ("bad", 1.0)):
        fleet = await start_fleet(count=2, job_seconds=JOB_SECONDS, fail=fail)
        agents = {agent["address"]: agent["name"] for agent in fleet.addresses()["agents"]}
        computers = [(name, address) for address, name in agents.items()]
        if policy_id == "ok":
            computers += unreachable
        policy = policy_over(computers, tmp_path, tmp_path / "src")
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))
        made[policy_id] = agents
    return made


def assert_settled_as_the_jobs_did(session: pb.PolicySession, agents: dict[str, str], fail: bool) -> None:
    """Every agent's job ended as the fleet ran it; the outcome is the rules' for that."""
    assert outcome_final(session), session
    jobs = {r.computer.address: r.job for r in session.computer_results if r.computer.address in agents}
    expected = pb.JOB_STATE_FAILED if fail else pb.JOB_STATE_SUCCEEDED
    assert len(jobs) == 2 and all(job.state == expected for job in jobs.values()), jobs
    if fail:
        assert session.outcome == pb.SESSION_STATE_FAILED and session.statistics.jobs_failed == 2
    else:
        # Two succeeded; the closed and the hung computer never received the start.
        assert session.outcome == pb.SESSION_STATE_WARNING
        assert session.statistics.jobs_succeeded == 2 and session.statistics.not_received == 2


async def test_a_replica_killed_while_following_has_its_outcomes_settled_by_another(
    spawn, start_server, start_fleet, postgres_url: str, closed_address: str, hung_address: str,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """kill -9 of the replica following two sessions' jobs: the live replica, which followed none of them before, claims both and settles SUCCESS-jobs and FAILED-jobs outcomes within a lease plus the jobs' time; the statuses agree."""
    caplog.set_level(logging.INFO, logger="backup_server.followed")
    survivor = await start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0)
    doomed = spawn_replica(spawn, postgres_url, deadline="1")
    unreachable = [("down", closed_address), ("hung", hung_address)]
    async with (
        grpc.aio.insecure_channel(doomed.address) as one,
        grpc.aio.insecure_channel(survivor.address) as two,
    ):
        on_doomed, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        agents = await policies_on_fleets(on_survivor, start_fleet, tmp_path, unreachable)
        for policy_id in agents:
            delivered = await on_doomed.StartPolicy(
                api.StartPolicyRequest(policy_id=policy_id, session_id=f"s-{policy_id}")
            )
            assert delivered.state != pb.SESSION_STATE_RUNNING
            assert delivered.outcome == pb.SESSION_STATE_RUNNING  # its jobs run on
        await asyncio.sleep(2 * LEASE)  # sweeps of the survivor while the doomed one lives
        assert not any(f"s-{p}" in survivor.control.running.live for p in agents)
        assert all(resumed(caplog, f"s-{p}") == 0 for p in agents)
        doomed.stop()  # SIGKILL
        killed = time.monotonic()
        finals = {p: (await watch_outcome(on_survivor, f"s-{p}", 30))[-1] for p in agents}
        took = time.monotonic() - killed
        statuses = await on_survivor.ListComputerStatuses(api.ListComputerStatusesRequest())
    assert took < LEASE + LEASE / 3 + max(JOB_SECONDS, RECONCILE_FOR) + 3.0, took
    assert_settled_as_the_jobs_did(finals["ok"], agents["ok"], fail=False)
    assert_settled_as_the_jobs_did(finals["bad"], agents["bad"], fail=True)
    assert all(resumed(caplog, f"s-{p}") == 1 for p in agents)
    failures = {s.computer.address: s.consecutive_failures for s in statuses.computer_statuses}
    assert failures == {
        **dict.fromkeys(agents["ok"], 0), **dict.fromkeys(agents["bad"], 1),
        closed_address: 1, hung_address: 1,
    }  # fmt: skip


async def test_two_replicas_starting_over_followed_sessions_follow_each_once(
    spawn, start_server, start_fleet, postgres_url: str, closed_address: str, hung_address: str,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica killed -9 leaves sessions whose jobs run; two replicas started together then follow each session exactly once between them, and settle it."""
    caplog.set_level(logging.INFO, logger="backup_server.followed")
    doomed = spawn_replica(spawn, postgres_url, deadline="1")
    unreachable = [("down", closed_address), ("hung", hung_address)]
    async with grpc.aio.insecure_channel(doomed.address) as channel:
        on_doomed = api_grpc.PolicyServiceStub(channel)
        agents = await policies_on_fleets(on_doomed, start_fleet, tmp_path, unreachable)
        for policy_id in agents:
            await on_doomed.StartPolicy(
                api.StartPolicyRequest(policy_id=policy_id, session_id=f"s-{policy_id}")
            )
    doomed.stop()  # SIGKILL
    first, second = await asyncio.gather(
        start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0),
        start_server(db=postgres_url, replica_lease=LEASE, agent_deadline=1.0),
    )
    async with grpc.aio.insecure_channel(first.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        finals = {p: (await watch_outcome(service, f"s-{p}", 30))[-1] for p in agents}
    assert_settled_as_the_jobs_did(finals["ok"], agents["ok"], fail=False)
    assert_settled_as_the_jobs_did(finals["bad"], agents["bad"], fail=True)
    await asyncio.sleep(LEASE)  # more sweeps of both: nothing is followed again
    assert all(resumed(caplog, f"s-{p}") == 1 for p in agents)


async def test_a_live_replicas_followed_sessions_are_never_claimed(postgres_url: str) -> None:
    """claim_followed_sessions leaves a session to its owner while the owner's lease holds, and gives it to one claimer once the lease runs out."""
    storage = await PostgresStorage.open(postgres_url, 2)
    try:
        await storage.renew_lease("r-owner", "127.0.0.1:1", 0.5)
        await storage.renew_lease("r-a", "127.0.0.1:2", 30)
        await storage.renew_lease("r-b", "127.0.0.1:3", 30)
        session = a_session("followed")
        session.state, session.outcome = pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_RUNNING
        await storage.insert_session(session, owner="r-owner")
        assert await storage.claim_followed_sessions("r-a") == []
        await asyncio.sleep(0.6)
        claims = await asyncio.gather(
            storage.claim_followed_sessions("r-a"), storage.claim_followed_sessions("r-b")
        )
        assert sorted(len(claimed) for claimed in claims) == [0, 1]
        assert await storage.claim_followed_sessions("r-a") == []
        assert await storage.claim_followed_sessions("r-b") == []
    finally:
        await storage.close()
