"""A job of another replica's share whose agent answers after it was marked lost corrects
the session's stored header (job counts, outcome) as on one server, and its outcome
hooks run once across the replicas: real replicas over one real PostgreSQL, fleet agents
partitioned (down, their jobs going on) for longer than --agent-lost-after, then back;
the owner alive, dead (kill -9), or still settling when the correction lands."""

import grpc
import psycopg
import pytest
from metrics_support import scrape, value
from test_replicas_follow import shares_by_position
from test_replicas_shares import other_replica

from agent_stub.fleet import Fleet
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer
from backup_server.share_owners import owner_of

from conftest import policy_over, wait_for

LEASE = 1.0
LOST_AFTER = 1.0
JOB_SECONDS = 1.2
DOWN_SECONDS = 3.0
PER_SHARE = 3
# Enough agents per fleet that each replica surely owns PER_SHARE of them (rendezvous
# hash: each owns about half; fewer than PER_SHARE of 24 has odds below one in 10^4).
FLEET = 24


def owned(fleet: Fleet, members: list[str], member: str) -> list[tuple[str, str]]:
    """PER_SHARE of the fleet's agents (name, address) that `member` owns among `members`."""
    agents = [(agent["name"], agent["address"]) for agent in fleet.addresses()["agents"]]
    mine = [(name, address) for name, address in agents if owner_of(address, members) == member]
    assert len(mine) >= PER_SHARE, (members, member)
    return mine[:PER_SHARE]


async def fleets(start_fleet, down_seconds: float = DOWN_SECONDS) -> tuple[Fleet, Fleet]:  # type: ignore[no-untyped-def]
    """Agents that stay up, and agents down (a partition) a quarter into their job for
    `down_seconds`, longer than --agent-lost-after: each such job is lost, then answers."""
    steady = await start_fleet(count=FLEET, job_seconds=JOB_SECONDS)
    down = await start_fleet(
        count=FLEET, job_seconds=JOB_SECONDS, partition=1.0, restart_seconds=down_seconds
    )
    return steady, down


async def stored_header(url: str, session_id: str) -> tuple[int, ...]:
    """(outcome, jobs_succeeded, jobs_unknown, jobs_running) as the sessions row has them."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select outcome, jobs_succeeded, jobs_unknown, jobs_running from sessions"
            " where id = %s",
            [session_id],
        )
        row = await cursor.fetchone()
    assert row is not None
    return tuple(int(column) for column in row)


async def session_on(address: str, session_id: str) -> pb.PolicySession:
    async with grpc.aio.insecure_channel(address) as channel:
        request = api.GetSessionRequest(session_id=session_id)
        return await api_grpc.PolicyServiceStub(channel).GetSession(request)


async def settled_with_lost_jobs(url: str, session_id: str) -> None:
    """The outcome is final first with the other share's jobs unknown: WARNING."""

    async def lost_and_settled() -> bool:
        header = await stored_header(url, session_id)
        return header == (pb.SESSION_STATE_WARNING, PER_SHARE, PER_SHARE, 0)

    await wait_for(lost_and_settled, seconds=20)


async def corrected_everywhere(
    url: str, addresses: list[str], session_id: str, total: int
) -> None:
    """The outcome corrected: every job succeeded, in the stored row and read on each
    replica at `addresses`."""

    async def corrected() -> bool:
        return await stored_header(url, session_id) == (pb.SESSION_STATE_SUCCESS, total, 0, 0)

    await wait_for(corrected, seconds=30)
    for address in addresses:
        session = await session_on(address, session_id)
        stats = session.statistics
        assert session.outcome == pb.SESSION_STATE_SUCCESS, (address, session)
        assert (stats.jobs_succeeded, stats.jobs_unknown) == (total, 0), (address, stats)
        assert not any(result.job_unknown for result in session.computer_results)


async def counted(servers: list[BackupServer], session_id: str) -> tuple[float, float]:
    """Summed over the replicas' /metrics: jobs finished succeeded, and sessions counted."""
    jobs = sessions = 0.0
    for server in servers:
        assert server.metrics is not None
        text = await scrape(server.metrics.url)
        jobs += value(text, "backup_jobs_finished_total", policy="p", state="succeeded")
        for outcome in ("success", "warning", "failed"):
            sessions += value(
                text, "backup_sessions_total", policy="p", action="start", trigger="operator",
                outcome=outcome,
            )  # fmt: skip
    return jobs, sessions


def replica(start_server, postgres_url: str, **overrides: object):  # type: ignore[no-untyped-def]
    return start_server(
        db=postgres_url, replica_lease=LEASE, agent_deadline=1.0, agent_lost_after=LOST_AFTER,
        metrics_listen="127.0.0.1:0", **overrides,
    )  # fmt: skip


async def start_on(server: BackupServer, computers: list[tuple[str, str]], tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers, tmp_path, tmp_path / "src")
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        await service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s"))


async def test_a_late_answer_in_the_other_share_corrects_the_header_once(
    start_server, start_fleet, postgres_url: str, tmp_path
) -> None:
    """The other replica's agents are lost, the owner settles WARNING with them unknown and releases the session; they answer again: the stored header, GetSession on both replicas, SUCCESS with every job succeeded, and across both replicas' /metrics each job finished is counted once and the session once."""
    owner = await replica(start_server, postgres_url)
    other = await replica(start_server, postgres_url)
    steady, down = await fleets(start_fleet)
    members = sorted([owner.replicas.id, other.replicas.id])
    computers = owned(steady, members, owner.replicas.id) + owned(down, members, other.replicas.id)
    await start_on(owner, computers, tmp_path)
    shares = await shares_by_position(postgres_url, "s")
    assert shares == [""] * PER_SHARE + [other.replicas.id] * PER_SHARE
    await settled_with_lost_jobs(postgres_url, "s")
    addresses = [owner.address, other.address]
    await corrected_everywhere(postgres_url, addresses, "s", 2 * PER_SHARE)

    async def hooks_ran_once() -> bool:
        return await counted([owner, other], "s") == (2 * PER_SHARE, 1)

    await wait_for(hooks_ran_once, seconds=10)
    assert await counted([owner, other], "s") == (2 * PER_SHARE, 1)


async def test_late_answers_in_both_shares_are_each_counted_once(
    start_server, start_fleet, postgres_url: str, tmp_path
) -> None:
    """Every agent of both shares is lost (FAILED, six unknown), then answers again: the owner, still following its own lost jobs, leaves its corrections to the storage's recount like the other replica's; the stored header and GetSession on both say SUCCESS with six succeeded, and /metrics count each job and the session once."""
    owner = await replica(start_server, postgres_url)
    other = await replica(start_server, postgres_url)
    _, down = await fleets(start_fleet)
    members = sorted([owner.replicas.id, other.replicas.id])
    computers = owned(down, members, owner.replicas.id) + owned(down, members, other.replicas.id)
    await start_on(owner, computers, tmp_path)

    async def lost_and_settled() -> bool:
        header = await stored_header(postgres_url, "s")
        return header == (pb.SESSION_STATE_FAILED, 0, 2 * PER_SHARE, 0)

    await wait_for(lost_and_settled, seconds=20)
    await corrected_everywhere(postgres_url, [owner.address, other.address], "s", 2 * PER_SHARE)

    async def hooks_ran_once() -> bool:
        return await counted([owner, other], "s") == (2 * PER_SHARE, 1)

    await wait_for(hooks_ran_once, seconds=10)


async def test_a_late_answer_while_the_owner_still_settles_is_not_lost(
    start_server, start_fleet, postgres_url: str, hung_addresses, tmp_path
) -> None:
    """The owner's own silent computer keeps its outcome RUNNING (reconciled for 12 s) while the other replica's lost agents answer again: the outcome becomes final once, already with their jobs succeeded (never WARNING), counted once across both replicas."""
    owner = await replica(start_server, postgres_url, reconcile_for=12.0)
    other = await replica(start_server, postgres_url, reconcile_for=12.0)
    steady, down = await fleets(start_fleet)
    members = sorted([owner.replicas.id, other.replicas.id])
    silent = next(a for a in hung_addresses(24) if owner_of(a, members) == owner.replicas.id)
    computers = owned(steady, members, owner.replicas.id) + owned(down, members, other.replicas.id)
    await start_on(owner, [*computers, ("silent", silent)], tmp_path)
    outcomes: list[tuple[int, ...]] = []

    async def final() -> bool:
        outcomes.append(await stored_header(postgres_url, "s"))
        return outcomes[-1][0] not in (pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_UNSPECIFIED)

    await wait_for(final, seconds=30)
    # With the silent computer not received, the best outcome is WARNING.
    assert outcomes[-1] == (pb.SESSION_STATE_WARNING, 2 * PER_SHARE, 0, 0), outcomes
    for address in (owner.address, other.address):
        stats = (await session_on(address, "s")).statistics
        assert (stats.jobs_succeeded, stats.jobs_unknown) == (2 * PER_SHARE, 0), stats

    async def hooks_ran_once() -> bool:
        return await counted([owner, other], "s") == (2 * PER_SHARE, 1)

    await wait_for(hooks_ran_once, seconds=10)


async def test_a_late_answer_after_the_owner_died_corrects_the_header(
    spawn, start_server, start_fleet, postgres_url: str, tmp_path
) -> None:
    """The owner (a process) settles WARNING with the other share's jobs unknown and is killed -9; the agents answer again: the live replica corrects the stored header to SUCCESS and counts only the jobs it corrected."""
    other = await replica(start_server, postgres_url)
    steady, down = await fleets(start_fleet, down_seconds=6.0)  # time to kill the owner
    doomed = spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", postgres_url,
        "--agent-deadline", "1", "--replica-lease", "1", "--agent-lost-after", "1",
    )  # fmt: skip
    doomed_id = await other_replica(postgres_url, other.replicas.id)
    members = sorted([doomed_id, other.replicas.id])
    computers = owned(steady, members, doomed_id) + owned(down, members, other.replicas.id)
    async with grpc.aio.insecure_channel(doomed.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers, tmp_path, tmp_path / "src")
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        await service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s"))

    await settled_with_lost_jobs(postgres_url, "s")
    doomed.stop()  # SIGKILL, before the agents are back
    await corrected_everywhere(postgres_url, [other.address], "s", 2 * PER_SHARE)
    assert other.metrics is not None
    text = await scrape(other.metrics.url)
    assert value(text, "backup_jobs_finished_total", policy="p", state="succeeded") == PER_SHARE


pytestmark = pytest.mark.timeout(120)
