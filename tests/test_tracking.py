"""OutcomeTracker: a delivered session's jobs followed on simulated agents, statistics and outcome exact."""

import asyncio
from pathlib import Path

import pytest
from test_agent import backup_policy

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb
from backup_server import following
from backup_server.sessions import Target, new_session
from backup_server.tracking import OutcomeTracker
from backup_server.transport import GrpcAgentTransport

from conftest import wait_for


class Record:
    """A live session as tracking sees it: the proto, the changed positions, the wake-ups."""

    def __init__(self, session: pb.PolicySession) -> None:
        self.session = session
        self.dirty: list[int] = []
        self.job_ends: list = []
        self.published = 0

    def publish(self) -> None:
        self.published += 1


@pytest.fixture
async def tracker_of():
    made: list[tuple[OutcomeTracker, GrpcAgentTransport]] = []

    def make(**options: object) -> tuple[OutcomeTracker, list[Record], list[tuple]]:
        transport = GrpcAgentTransport(1.0)
        released: list[Record] = []
        outcomes: list[tuple] = []
        tracker = OutcomeTracker(transport, 1.0, release=released.append, **options)
        tracker.on_outcome.append(
            lambda session, corrected: outcomes.append((session.outcome, corrected))
        )
        made.append((tracker, transport))
        return tracker, released, outcomes

    yield make
    for tracker, transport in made:
        await tracker.close()
        await transport.close()


async def deliver(agent_control, addresses: list[str], session_id: str = "s-1") -> Record:
    """A start session over `addresses`, delivered by hand: each agent's StartJob reply recorded."""
    targets = [Target(pb.Computer(name=f"c{i}", address=a), "") for i, a in enumerate(addresses)]
    session = new_session(session_id, "nightly", pb.SESSION_ACTION_START, targets)
    session.outcome = pb.SESSION_STATE_RUNNING
    for result in session.computer_results:
        reply = await agent_control(result.computer.address).StartJob(
            agent_api.StartJobRequest(
                session_id=session_id, policy=backup_policy(Path("/tmp"), Path("/srv"))
            )
        )
        result.delivery = pb.DELIVERY_RECEIVED
        result.job.CopyFrom(reply.job)
        result.job_id = reply.job.id
    session.statistics.pending = 0
    session.statistics.received = len(addresses)
    return Record(session)


async def test_mixed_outcomes_give_exact_statistics(start_fleet, agent_control, tracker_of) -> None:
    """One agent in two fails: jobs_succeeded and jobs_failed exact, outcome WARNING, released once."""
    fleet = await start_fleet(count=40, job_seconds=0.3, job_seconds_max=0.6, fail=0.5)
    addresses = [agent["address"] for agent in fleet.addresses()["agents"]]
    record = await deliver(agent_control, addresses)
    tracker, released, outcomes = tracker_of()
    tracker.track(record)
    await wait_for(lambda: asyncio.sleep(0, bool(released)), 10)
    stats = record.session.statistics
    assert (stats.jobs_succeeded, stats.jobs_failed, stats.jobs_running) == (20, 20, 0)
    assert record.session.outcome == pb.SESSION_STATE_WARNING
    assert record.session.HasField("outcome_time")
    assert outcomes == [(pb.SESSION_STATE_WARNING, False)]
    assert released == [record]
    failed = fleet.addresses()["outcomes"]
    for result in record.session.computer_results:
        expected = (
            pb.JOB_STATE_FAILED if result.computer.address in failed else pb.JOB_STATE_SUCCEEDED
        )
        assert result.job.state == expected and result.HasField("last_contact_time")


async def test_a_timed_out_delivery_that_arrived_is_reconciled(
    start_fleet, agent_control, tracker_of
) -> None:
    """NOT_RECEIVED by DEADLINE_EXCEEDED, but the agent lists the session's job: RECEIVED, reconciled, counted, warned."""
    fleet = await start_fleet(count=2, job_seconds=0.3)
    addresses = [agent["address"] for agent in fleet.addresses()["agents"]]
    record = await deliver(agent_control, addresses)
    late = record.session.computer_results[1]
    late.delivery, late.detail = pb.DELIVERY_NOT_RECEIVED, "DEADLINE_EXCEEDED: Deadline Exceeded"
    late.ClearField("job")
    late.job_id = ""
    stats = record.session.statistics
    stats.received, stats.not_received = 1, 1
    record.session.state = pb.SESSION_STATE_WARNING
    tracker, released, _ = tracker_of()
    tracker.track(record)
    await wait_for(lambda: asyncio.sleep(0, bool(released)), 10)
    assert late.delivery == pb.DELIVERY_RECEIVED and late.reconciled
    assert (stats.received, stats.not_received, stats.jobs_succeeded) == (2, 0, 2)
    assert record.session.state == pb.SESSION_STATE_SUCCESS
    assert record.session.outcome == pb.SESSION_STATE_SUCCESS
    assert any("reconciled" in warning for warning in record.session.warnings)


async def test_a_lost_agent_makes_the_outcome_final_then_is_corrected(
    start_fleet, agent_control, tracker_of, monkeypatch
) -> None:
    """Unknown after lost_after lets the outcome be final (FAILED); the agent's late answer corrects it."""
    monkeypatch.setattr(following, "LONGEST_RETRY", 0.3)
    fleet = await start_fleet(count=1, job_seconds=0.2, restart=1.0, restart_seconds=2.0)
    addresses = [agent["address"] for agent in fleet.addresses()["agents"]]
    record = await deliver(agent_control, addresses)
    tracker, released, outcomes = tracker_of(lost_after=1.0)
    tracker.track(record)
    await wait_for(lambda: asyncio.sleep(0, bool(outcomes)), 5)
    assert outcomes[0] == (pb.SESSION_STATE_FAILED, False)
    assert record.session.statistics.jobs_unknown == 1
    await wait_for(lambda: asyncio.sleep(0, bool(released)), 10)
    assert record.session.statistics.jobs_unknown == 0
    assert record.session.statistics.jobs_failed == 1
    assert record.session.computer_results[0].job.state == pb.JOB_STATE_FAILED
