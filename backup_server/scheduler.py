"""The scheduler: starts policies on their schedule, stops them at their window's end, and
retries the computers that did not succeed.

It owns no state of its own that matters: what it needs to know after a restart (the last
scheduled session, the latest session and its outcome) is read from storage through
`Actions`, so a missed run and a pending retry survive the server. Time comes from an
injected `Clock`, so tests run a week of schedule in milliseconds. Before acting it asks
`Leadership` whether this replica is the one scheduler of the deployment; with SQLite
that is always so, and a PostgreSQL backend can answer with an advisory lock.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from backup.errors import BackupError
from backup.v1 import resources_pb2 as pb
from backup.waits import wait_event

from .retries import original_of, plan_retry, retry_due, retry_may_follow
from .schedule import TICK, Plan, Window

log = logging.getLogger("backup_server.scheduler")

MAX_SLEEP = timedelta(seconds=30)
LEADER_POLL = timedelta(seconds=10)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    async def sleep_until(self, instant: datetime, wake: asyncio.Event) -> None:
        """Returns at `instant`, or earlier once `wake` is set."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, instant: datetime, wake: asyncio.Event) -> None:
        delay = (instant - self.now()).total_seconds()
        # Not asyncio.wait_for: on Python 3.11 a wake-up landing together with a
        # cancellation returns normally and drops the cancellation, and the scheduler
        # went on (the server's shutdown then waited for it forever).
        await wait_event(wake, max(delay, 0.0))


class Leadership(Protocol):
    async def is_leader(self) -> bool:
        """Whether this replica is the deployment's one scheduler right now."""
        ...


class SoleReplica:
    """One server per database file: always the leader."""

    async def is_leader(self) -> bool:
        return True


class Actions(Protocol):
    """What the scheduler reads and does; the server implements it over storage and Control."""

    async def policies(self) -> list[pb.BackupPolicy]: ...

    async def latest_session(
        self, policy_id: str, with_results: bool = True
    ) -> pb.PolicySession | None:
        """The policy's newest session, with its computers' results unless told not to."""
        ...

    async def last_scheduled_start(self, policy_id: str) -> datetime | None:
        """When the policy's newest session of trigger SCHEDULE started."""
        ...

    async def start(
        self,
        policy_id: str,
        trigger: pb.SessionTrigger,
        *,
        computer_names: Sequence[str] = (),
        retry_of_session_id: str = "",
        attempt: int = 0,
        warnings: Sequence[str] = (),
    ) -> pb.PolicySession: ...

    async def stop_running(self, policy_id: str) -> pb.PolicySession | None:
        """Stops the policy's jobs still running (trigger WINDOW); None when none runs."""
        ...


@dataclass(frozen=True)
class NextRun:
    """A policy's next scheduled run as computed for one version of the policy."""

    policy_changed_ns: int
    at: datetime | None
    computed: datetime

    def valid(self, policy_changed_ns: int, now: datetime) -> bool:
        """Still the answer: the policy is unchanged, the run not yet due, and (with no
        run within the horizon) computed less than a day ago."""
        if policy_changed_ns != self.policy_changed_ns:
            return False
        if self.at is None:
            return now - self.computed < timedelta(days=1)
        return now < self.at


def _stamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Scheduler:
    """One loop over every policy: wakes at the next thing due, or when told to."""

    def __init__(
        self,
        actions: Actions,
        clock: Clock | None = None,
        leadership: Leadership | None = None,
        max_sleep: timedelta = MAX_SLEEP,
    ) -> None:
        self._actions = actions
        self.clock = clock or SystemClock()
        self._leadership = leadership or SoleReplica()
        self._max_sleep = max_sleep
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._reset()

    def _reset(self) -> None:
        # Only what a new leader may rebuild: anything lost here is recomputed from storage.
        self._started_at = self.clock.now()
        self._handled_run: dict[str, datetime] = {}
        # Each policy's next scheduled run, computed once, not on every tick.
        self._next_run: dict[str, NextRun] = {}
        # Each window's next end as last computed, with the policy version it was for.
        self._window_checked: dict[str, tuple[int, datetime]] = {}
        self._tried: set[tuple[str, str, int]] = set()
        self._leading = False

    def wake(self) -> None:
        """Re-reads the policies now (after one was created, changed or deleted)."""
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled."""
        log.info("scheduler started")
        while True:
            self._wake.clear()
            now = self.clock.now()
            try:
                wake_at = await self.tick(now)
            except BackupError as error:
                # Storage refused (a full disk): try again shortly, never die.
                log.warning("scheduler: %s", error.message)
                wake_at = now + LEADER_POLL
            except Exception:
                # A bug in one tick must not end every policy's schedule: say so, go on.
                log.exception("scheduler: a tick failed; trying again shortly")
                wake_at = now + LEADER_POLL
            await self.clock.sleep_until(wake_at, self._wake)

    async def idle(self) -> None:
        """Waits for the starts and stops the scheduler has under way."""
        while self._busy:
            await asyncio.wait(list(self._busy.values()))

    async def tick(self, now: datetime) -> datetime:
        """Does everything due at `now`; returns when something is next due."""
        if not await self._leadership.is_leader():
            if self._leading:
                log.info("scheduler: no longer the leader; standing by")
            self._reset()
            return now + LEADER_POLL
        if not self._leading:
            self._reset()
            self._started_at = now
            self._leading = True
        upcoming = [now + self._max_sleep]
        policies = await self._actions.policies()
        for policy in policies:
            if policy.id in self._busy:
                continue
            upcoming.extend(await self._visit(policy, now))
        live = {policy.id for policy in policies}
        for table in (self._handled_run, self._window_checked, self._next_run):
            for gone in set(table) - live:
                del table[gone]
        return min(upcoming)

    async def _visit(self, policy: pb.BackupPolicy, now: datetime) -> list[datetime]:
        """What is due for one policy now; returns when it next needs a look."""
        changed = policy.update_time.ToNanoseconds()
        upcoming: list[datetime] = []
        if policy.HasField("backup_window"):
            next_end, passed = self._window_end(policy, changed, now)
            upcoming.append(next_end)
            if passed is not None:
                self._act(policy.id, self._stop_at_window_end(policy.id, passed))
                return upcoming
        if policy.HasField("schedule") and policy.schedule.cron:
            known = self._next_run.get(policy.id)
            if known is not None and known.valid(changed, now):
                upcoming.extend(t for t in [known.at] if t is not None)
            else:
                plan = Plan.of(policy)
                assert plan is not None
                if await self._scheduled_start(policy, plan, now):
                    self._next_run.pop(policy.id, None)
                    return upcoming
                at = plan.next_run(now + TICK)
                self._next_run[policy.id] = NextRun(changed, at, now)
                upcoming.extend(t for t in [at] if t is not None)
        if policy.retry.attempts > 0:
            upcoming.extend(await self._retry(policy, now))
        return upcoming

    async def _retry(self, policy: pb.BackupPolicy, now: datetime) -> list[datetime]:
        """Starts the retry the latest session calls for once it is due and the window open."""
        # The header first: every policy with retries is looked at on every tick, and the
        # results of a 10,000-computer session are read only once its retry is due.
        latest = await self._actions.latest_session(policy.id, with_results=False)
        if latest is None or not retry_may_follow(policy, latest):
            return []
        key = (policy.id, original_of(latest), latest.attempt + 1)
        if key in self._tried:
            return []
        due = retry_due(policy, latest)
        window = Window.of(policy)
        due_at = window.opens_at_or_after(max(due, now)) if window else due
        if due_at > now:
            return [due_at]
        retry = plan_retry(policy, await self._actions.latest_session(policy.id))
        if retry is None or (policy.id, retry.retry_of_session_id, retry.attempt) != key:
            return []  # nothing to retry after all, or a newer session meanwhile
        self._tried.add(key)
        log.info(
            "policy %s: retry %d of session %s for %d computers",
            policy.id,
            retry.attempt,
            retry.retry_of_session_id,
            len(retry.computer_names),
        )
        self._act(
            policy.id,
            self._start(
                policy.id,
                pb.SESSION_TRIGGER_RETRY,
                computer_names=retry.computer_names,
                retry_of_session_id=retry.retry_of_session_id,
                attempt=retry.attempt,
            ),
        )
        return []

    def _window_end(
        self, policy: pb.BackupPolicy, changed: int, now: datetime
    ) -> tuple[datetime, datetime | None]:
        """The window's next end, and the end that passed since the last look, if any.

        The first look at a window (start-up, or a changed policy) outside it counts as an
        end: jobs running then are running outside it, whenever the window closed.
        """
        known = self._window_checked.get(policy.id)
        if known is not None and known[0] == changed and now < known[1]:
            return known[1], None
        window = Window.of(policy)
        assert window is not None
        next_end = window.end_after(now)
        self._window_checked[policy.id] = (changed, next_end)
        if known is None or known[0] != changed:
            return next_end, None if window.contains(now) else window.last_end_at_or_before(now)
        return next_end, known[1] if now >= known[1] else None

    async def _scheduled_start(self, policy: pb.BackupPolicy, plan: Plan, now: datetime) -> bool:
        """Starts the latest scheduled run not yet run, if the window allows it now."""
        since = max(
            policy.create_time.ToDatetime(tzinfo=UTC), policy.update_time.ToDatetime(tzinfo=UTC)
        )
        for known in (
            self._handled_run.get(policy.id),
            await self._actions.last_scheduled_start(policy.id),
        ):
            if known is not None:
                since = max(since, known)
        due = plan.latest_run(since, now)
        if due is None:
            return False
        self._handled_run[policy.id] = due
        if plan.paused:
            return False
        if not plan.in_window(now):
            log.info(
                "policy %s: the run due at %s is outside the backup window now; not run",
                policy.id,
                _stamp(due),
            )
            return False
        warnings = []
        if due < self._started_at:
            warnings.append(
                f"missed run: due at {_stamp(due)} while the server was not running; run once "
                "at start-up (older missed runs are not repeated)"
            )
            log.warning("policy %s: %s", policy.id, warnings[0])
        self._act(
            policy.id, self._start(policy.id, pb.SESSION_TRIGGER_SCHEDULE, warnings=warnings)
        )
        return True

    def _act(self, policy_id: str, work: Awaitable[None]) -> None:
        """Runs a start or stop beside the loop: one policy's fan-out never delays another's."""
        task = asyncio.ensure_future(work)
        self._busy[policy_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._busy.pop(policy_id, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "policy %s: scheduled action failed",
                    policy_id,
                    exc_info=finished.exception(),
                )
            self.wake()

        task.add_done_callback(done)

    async def _start(self, policy_id: str, trigger: pb.SessionTrigger, **how: object) -> None:
        try:
            session = await self._actions.start(policy_id, trigger, **how)  # type: ignore[arg-type]
        except BackupError as error:
            log.warning("policy %s: scheduled start not made: %s", policy_id, error.message)
            return
        log.info(
            "policy %s: %s session %s",
            policy_id,
            pb.SessionTrigger.Name(trigger).removeprefix("SESSION_TRIGGER_").lower(),
            session.id,
        )

    async def _stop_at_window_end(self, policy_id: str, end: datetime) -> None:
        try:
            session = await self._actions.stop_running(policy_id)
        except BackupError as error:
            log.warning("policy %s: window-end stop not made: %s", policy_id, error.message)
            return
        if session is not None:
            log.info(
                "policy %s: backup window ended at %s; stop session %s for %d computers",
                policy_id,
                _stamp(end),
                session.id,
                session.statistics.total,
            )

    async def close(self, task: "asyncio.Task[None] | None" = None) -> None:
        """Cancels the loop task and whatever starts are still under way."""
        pending: list[asyncio.Future[None]] = [*self._busy.values()]
        if task is not None:
            pending.append(task)
        for each in pending:
            each.cancel()
        for each in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await each

