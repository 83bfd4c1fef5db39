"""The scheduler's loop on an injected clock: a week of schedule, DST, windows, missed runs, retries."""

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf import duration_pb2
from scheduler_support import FakeClock, run_for

from backup.v1 import resources_pb2 as pb
from backup_server.scheduler import Scheduler

MONDAY = datetime(2026, 6, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


class MemoryActions:
    """Policies and sessions in memory; every job ends at once, the `failing` computers' jobs failed."""

    def __init__(self, clock: FakeClock, *policies: pb.BackupPolicy) -> None:
        self.clock = clock
        self.catalogue = {policy.id: policy for policy in policies}
        self.sessions: list[pb.PolicySession] = []
        self.stops: list[datetime] = []
        self.failing: set[str] = set()
        self.running = True
        self.reads_with_results = 0

    async def policies(self) -> list[pb.BackupPolicy]:
        return list(self.catalogue.values())

    async def latest_session(
        self, policy_id: str, with_results: bool = True
    ) -> pb.PolicySession | None:
        self.reads_with_results += with_results
        mine = [s for s in self.sessions if s.policy_id == policy_id]
        return mine[-1] if mine else None

    async def last_scheduled_start(self, policy_id: str) -> datetime | None:
        mine = [
            s for s in self.sessions
            if s.policy_id == policy_id and s.trigger == pb.SESSION_TRIGGER_SCHEDULE
        ]
        return mine[-1].start_time.ToDatetime(tzinfo=UTC) if mine else None

    def add_session(self, policy_id: str, trigger: pb.SessionTrigger, names: Sequence[str], **fields: object) -> pb.PolicySession:
        session = pb.PolicySession(
            id=f"s{len(self.sessions)}", policy_id=policy_id, action=pb.SESSION_ACTION_START,
            trigger=trigger, outcome=pb.SESSION_STATE_SUCCESS, **fields,  # type: ignore[arg-type]
        )
        session.start_time.FromDatetime(self.clock.now())
        session.outcome_time.FromDatetime(self.clock.now())
        for name in names:
            result = session.computer_results.add(delivery=pb.DELIVERY_RECEIVED)
            result.computer.name = name
            failed = name in self.failing
            result.job.state = pb.JOB_STATE_FAILED if failed else pb.JOB_STATE_SUCCEEDED
            if failed:
                session.outcome = pb.SESSION_STATE_WARNING
        self.sessions.append(session)
        return session

    async def start(self, policy_id: str, trigger: pb.SessionTrigger, *, computer_names: Sequence[str] = (),
                    retry_of_session_id: str = "", attempt: int = 0, warnings: Sequence[str] = ()) -> pb.PolicySession:
        names = computer_names or [c.name for c in self.catalogue[policy_id].computers]
        return self.add_session(policy_id, trigger, names, retry_of_session_id=retry_of_session_id,
                                attempt=attempt, warnings=list(warnings))

    async def stop_running(self, policy_id: str) -> pb.PolicySession | None:
        self.stops.append(self.clock.now())
        return None


def scheduled(cron: str, tz: str = "", created: datetime = MONDAY, **fields: object) -> pb.BackupPolicy:
    policy = pb.BackupPolicy(
        id="nightly", name="nightly", schedule=pb.Schedule(cron=cron, time_zone=tz),
        computers=[pb.Computer(name=n, address=f"127.0.0.1:{i + 1}") for i, n in enumerate(["a", "b", "c"])],
        **fields,  # type: ignore[arg-type]
    )
    policy.create_time.FromDatetime(created)
    policy.update_time.FromDatetime(created)
    return policy


def starts(actions: MemoryActions, trigger: int = pb.SESSION_TRIGGER_SCHEDULE) -> list[datetime]:
    return [s.start_time.ToDatetime(tzinfo=UTC) for s in actions.sessions if s.trigger == trigger]


def make(policy: pb.BackupPolicy, start: datetime = MONDAY) -> tuple[FakeClock, MemoryActions, Scheduler]:
    clock = FakeClock(start)
    actions = MemoryActions(clock, policy)
    return clock, actions, Scheduler(actions, clock, max_sleep=timedelta(days=2))


async def test_an_hourly_schedule_runs_every_hour_for_a_week() -> None:
    """Seven days of '0 * * * *' make 168 scheduled sessions, each started on the hour it was due."""
    clock, actions, scheduler = make(scheduled("0 * * * *"), MONDAY + timedelta(minutes=1))
    await run_for(scheduler, clock, timedelta(days=7))
    found = starts(actions)
    assert len(found) == 168
    assert found[0] == MONDAY + timedelta(hours=1)
    assert all(t.minute == 0 for t in found)
    assert all(not s.warnings for s in actions.sessions)


async def test_spring_forward_and_fall_back_in_new_york() -> None:
    """'30 2 * * *' skips 2026-03-08 (02:30 does not exist) and '30 1 * * *' runs once on 2026-11-01."""
    spring = datetime(2026, 3, 6, tzinfo=NEW_YORK)
    clock, actions, scheduler = make(scheduled("30 2 * * *", "America/New_York", spring), spring)
    await run_for(scheduler, clock, timedelta(days=4))
    assert [t.astimezone(NEW_YORK).day for t in starts(actions)] == [6, 7, 9]
    autumn = datetime(2026, 10, 31, tzinfo=NEW_YORK)
    clock, actions, scheduler = make(scheduled("30 1 * * *", "America/New_York", autumn), autumn)
    await run_for(scheduler, clock, timedelta(days=3))
    local = [t.astimezone(NEW_YORK) for t in starts(actions)]
    assert [(t.day, t.hour, t.minute) for t in local] == [(31, 1, 30), (1, 1, 30), (2, 1, 30)]


async def test_window_limits_scheduled_starts_and_stops_at_its_end() -> None:
    """With a 22:00-06:00 window an hourly schedule runs 8 times a night; at start-up (outside it) and each 06:00 the running jobs are stopped."""
    policy = scheduled("0 * * * *", backup_window=pb.BackupWindow(start="22:00", end="06:00"))
    clock, actions, scheduler = make(policy, MONDAY + timedelta(hours=12))
    await run_for(scheduler, clock, timedelta(days=3))
    found = starts(actions)
    assert len(found) == 24
    assert {t.hour for t in found} == {22, 23, 0, 1, 2, 3, 4, 5}
    assert actions.stops == [MONDAY + timedelta(hours=12)] + [MONDAY + timedelta(days=d, hours=6) for d in (1, 2, 3)]


async def test_start_up_outside_the_window_stops_what_runs() -> None:
    """A server that starts after the window closed stops the policy's running jobs at once."""
    policy = scheduled("0 23 * * *", backup_window=pb.BackupWindow(start="22:00", end="06:00"))
    clock, actions, scheduler = make(policy, MONDAY + timedelta(hours=9))
    await run_for(scheduler, clock, timedelta(hours=1))
    assert actions.stops == [MONDAY + timedelta(hours=9)]


async def test_a_missed_run_is_run_once_at_start_up_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Down for three days: only the latest missed 02:00 run is started, at once, with a warning naming when it was due."""
    clock, actions, scheduler = make(scheduled("0 2 * * *"), MONDAY + timedelta(days=3, hours=10))
    actions.add_session("nightly", pb.SESSION_TRIGGER_SCHEDULE, ["a"]).start_time.FromDatetime(MONDAY + timedelta(hours=2))
    with caplog.at_level(logging.WARNING, "backup_server.scheduler"):
        await run_for(scheduler, clock, timedelta(hours=12))
    late = [s for s in actions.sessions[1:]]
    assert [s.start_time.ToDatetime(tzinfo=UTC) for s in late] == [MONDAY + timedelta(days=3, hours=10)]
    assert "due at 2026-06-04 02:00 UTC" in late[0].warnings[0]
    assert "due at 2026-06-04 02:00 UTC" in caplog.text
    await run_for(scheduler, clock, timedelta(days=1))
    assert starts(actions)[-1] == MONDAY + timedelta(days=4, hours=2)
    assert not actions.sessions[-1].warnings


async def test_a_paused_policy_neither_runs_nor_catches_up() -> None:
    """While paused nothing starts, and a server restarted while it is paused runs no missed run."""
    policy = scheduled("0 * * * *")
    policy.schedule.paused = True
    clock, actions, scheduler = make(policy, MONDAY + timedelta(days=2))
    await run_for(scheduler, clock, timedelta(days=1))
    assert actions.sessions == []


class Follower:
    def __init__(self) -> None:
        self.leader = False

    async def is_leader(self) -> bool:
        return self.leader


async def test_a_replica_that_is_not_the_leader_does_nothing() -> None:
    """Leadership is asked before acting: a follower starts nothing; once it leads it runs the latest missed run, then the schedule."""
    clock = FakeClock(MONDAY + timedelta(minutes=1))
    actions = MemoryActions(clock, scheduled("0 * * * *"))
    leadership = Follower()
    scheduler = Scheduler(actions, clock, leadership, max_sleep=timedelta(days=1))
    await run_for(scheduler, clock, timedelta(hours=5))
    assert actions.sessions == []
    leadership.leader = True
    await run_for(scheduler, clock, timedelta(hours=3))
    taken_over = MONDAY + timedelta(hours=5, minutes=1)
    assert starts(actions) == [taken_over] + [MONDAY + timedelta(hours=h) for h in (6, 7, 8)]
    assert "due at 2026-06-01 05:00 UTC" in actions.sessions[0].warnings[0]


def retrying(attempts: int, **fields: object) -> pb.BackupPolicy:
    return scheduled("0 2 * * *", retry=pb.RetryPolicy(attempts=attempts, interval=duration_pb2.Duration(seconds=600)), **fields)


async def test_retries_target_only_the_failed_computers_until_attempts_run_out() -> None:
    """b keeps failing: three retries, 10 minutes apart, each only for b, with attempt 1..3 and the original's id."""
    clock, actions, scheduler = make(retrying(3), MONDAY + timedelta(hours=1))
    actions.failing = {"b"}
    await run_for(scheduler, clock, timedelta(hours=12))
    original, *retries = actions.sessions
    assert original.trigger == pb.SESSION_TRIGGER_SCHEDULE
    assert [r.attempt for r in retries] == [1, 2, 3]
    assert all(r.trigger == pb.SESSION_TRIGGER_RETRY and r.retry_of_session_id == original.id for r in retries)
    assert all([c.computer.name for c in r.computer_results] == ["b"] for r in retries)
    assert starts(actions, pb.SESSION_TRIGGER_RETRY) == [MONDAY + timedelta(hours=2, minutes=10 * n) for n in (1, 2, 3)]


async def test_results_are_read_only_when_a_retry_is_due() -> None:
    """Twelve hours of ticks over a policy with retries: the latest session's results (a
    large session's thousands of rows) are read once per retry made, never for a success."""
    clock, actions, scheduler = make(retrying(3), MONDAY + timedelta(hours=1))
    actions.failing = {"b"}
    await run_for(scheduler, clock, timedelta(hours=12))
    assert len(actions.sessions) == 4 and actions.reads_with_results == 3
    clock, actions, scheduler = make(retrying(3), MONDAY + timedelta(hours=1))
    await run_for(scheduler, clock, timedelta(days=2))
    assert len(actions.sessions) == 2 and actions.reads_with_results == 0


async def test_retries_stop_once_every_computer_succeeded() -> None:
    """When the first retry succeeds, no second retry is made."""
    clock, actions, scheduler = make(retrying(5), MONDAY + timedelta(hours=1))
    actions.failing = {"a", "c"}
    await run_for(scheduler, clock, timedelta(hours=1, minutes=5))
    actions.failing = set()
    await run_for(scheduler, clock, timedelta(hours=3))
    assert [len(s.computer_results) for s in actions.sessions] == [3, 2]


async def test_the_next_scheduled_run_supersedes_a_retry_waiting_for_the_window() -> None:
    """A retry due after the 02:00-02:05 window closed waits; the next night's 02:00 run comes first and supersedes it."""
    policy = retrying(1, backup_window=pb.BackupWindow(start="02:00", end="02:05"))
    clock, actions, scheduler = make(policy, MONDAY + timedelta(hours=1))
    actions.failing = {"a"}
    await run_for(scheduler, clock, timedelta(hours=12))
    assert len(actions.sessions) == 1
    await run_for(scheduler, clock, timedelta(days=1))
    # The next night's scheduled run came first: the pending retry was superseded by it.
    assert [s.trigger for s in actions.sessions] == [pb.SESSION_TRIGGER_SCHEDULE] * 2


async def test_an_operator_start_supersedes_a_pending_retry() -> None:
    """A newer operator session of the policy before the retry is due means the retry is never made."""
    clock, actions, scheduler = make(retrying(3), MONDAY + timedelta(hours=1))
    actions.failing = {"b"}
    await run_for(scheduler, clock, timedelta(hours=1, minutes=5))
    actions.failing = set()
    actions.add_session("nightly", pb.SESSION_TRIGGER_OPERATOR, ["a", "b", "c"])
    await run_for(scheduler, clock, timedelta(hours=3))
    assert [s.trigger for s in actions.sessions] == [pb.SESSION_TRIGGER_SCHEDULE, pb.SESSION_TRIGGER_OPERATOR]


async def test_a_retry_due_outside_the_window_starts_when_it_opens() -> None:
    """An operator start that failed at 03:00 with a 02:00-02:30 window is retried at 02:00 the next day, not at 03:10."""
    policy = retrying(1, backup_window=pb.BackupWindow(start="02:00", end="02:30"))
    policy.ClearField("schedule")
    clock, actions, scheduler = make(policy, MONDAY + timedelta(hours=3))
    actions.failing = {"c"}
    actions.add_session("nightly", pb.SESSION_TRIGGER_OPERATOR, ["a", "b", "c"])
    await run_for(scheduler, clock, timedelta(days=1, hours=1))
    assert starts(actions, pb.SESSION_TRIGGER_RETRY) == [MONDAY + timedelta(days=1, hours=2)]
