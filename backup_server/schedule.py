"""When a policy runs by itself: cron times in a time zone, the backup window, missed runs.

Plain functions of a policy and an instant (aware datetimes, compared in UTC); nothing
here reads a clock, so the scheduler and its tests decide what "now" is.

Daylight saving is handled as cron does: cron is evaluated on the wall clock of the
schedule's zone; a wall-clock time that does not exist (spring forward) is skipped, one
that happens twice (fall back) runs once, at its first occurrence.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from backup.v1 import resources_pb2 as pb

CLOCK_PATTERN = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
HORIZON = timedelta(days=366)
TICK = timedelta(microseconds=1)
DST_MARGIN = timedelta(hours=2)
ZONE_NAME_MAX = 64


def zone(name: str) -> tzinfo:
    """The IANA zone of that name; empty means UTC. Raises ValueError when unknown."""
    if not name:
        return UTC
    # ZoneInfo takes paths; a name is letters, digits and _+-/ without '..'.
    if len(name) > ZONE_NAME_MAX or ".." in name or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name):
        raise ValueError(f"{name[:80]!r} is not a time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known IANA time zone") from None


def check_cron(expression: str) -> None:
    """Raises ValueError saying why a 5-field cron expression is not one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression[:80]!r} has {len(fields)} fields; a cron expression has 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as error:
        raise ValueError(f"{expression[:80]!r} is not a cron expression: {error}") from None


def parse_clock(text: str) -> time:
    """'HH:MM' (00:00-23:59) as a time of day; raises ValueError otherwise."""
    match = CLOCK_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text[:20]!r} is not a time of day HH:MM (00:00 to 23:59)")
    return time(int(match[1]), int(match[2]))


def _local(wall: datetime, where: tzinfo) -> datetime | None:
    """A wall-clock time in a zone as an instant; None when that time does not exist."""
    instant = wall.replace(tzinfo=where, fold=0)
    if instant.astimezone(UTC).astimezone(where).replace(tzinfo=None) != wall:
        return None
    return instant.astimezone(UTC)


def _wall_end(wall: datetime, where: tzinfo) -> datetime:
    """A window boundary as an instant; one inside a spring-forward gap is the gap's end."""
    return wall.replace(tzinfo=where, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """Daily hours [start, end) in a zone; spans midnight when end < start."""

    start: time
    end: time
    where: tzinfo

    @classmethod
    def of(cls, policy: pb.BackupPolicy) -> "Window | None":
        if not policy.HasField("backup_window"):
            return None
        window = policy.backup_window
        # Empty: the schedule's zone (empty again without a schedule, which is UTC).
        name = window.time_zone or policy.schedule.time_zone
        return cls(parse_clock(window.start), parse_clock(window.end), zone(name))

    def contains(self, instant: datetime) -> bool:
        now = instant.astimezone(self.where).time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def _boundaries(self, instant: datetime, at: time) -> Iterator[datetime]:
        day = instant.astimezone(self.where).date()
        for offset in range(-1, 3):
            yield _wall_end(datetime.combine(day + timedelta(days=offset), at), self.where)

    def end_after(self, instant: datetime) -> datetime:
        """The first end of the window strictly after the instant."""
        return min(t for t in self._boundaries(instant, self.end) if t > instant)

    def last_end_at_or_before(self, instant: datetime) -> datetime:
        return max(t for t in self._boundaries(instant, self.end) if t <= instant)

    def opens_at_or_after(self, instant: datetime) -> datetime:
        """The instant itself inside the window, else the window's next start."""
        if self.contains(instant):
            return instant
        return min(t for t in self._boundaries(instant, self.start) if t > instant)


@dataclass(frozen=True)
class Plan:
    """A policy's schedule and window, ready to answer when it runs."""

    cron: str
    where: tzinfo
    paused: bool
    window: Window | None

    @classmethod
    def of(cls, policy: pb.BackupPolicy) -> "Plan | None":
        """None when the policy has no schedule."""
        if not policy.HasField("schedule") or not policy.schedule.cron:
            return None
        schedule = policy.schedule
        return cls(schedule.cron, zone(schedule.time_zone), schedule.paused, Window.of(policy))

    def cron_times(self, after: datetime, *, reverse: bool = False) -> Iterator[datetime]:
        """Cron times strictly after (or, reversed, strictly before) the instant, in UTC."""
        wall = after.astimezone(self.where).replace(tzinfo=None)
        # cronsim works on the wall clock and ignores seconds. Start past any daylight-saving
        # shift of the wall clock, then drop what falls on the wrong side of the instant:
        # in a repeated hour, wall times ahead of it may already have passed.
        start = wall + DST_MARGIN if reverse else wall - DST_MARGIN
        for candidate in CronSim(self.cron, start, reverse=reverse):
            instant = _local(candidate, self.where)
            if instant is None:
                continue
            if (instant < after) if reverse else (instant > after):
                yield instant

    def in_window(self, instant: datetime) -> bool:
        return self.window is None or self.window.contains(instant)

    def next_run(self, now: datetime) -> datetime | None:
        """The first cron time at or after now inside the window, within a year; None when
        paused or when there is none."""
        if self.paused:
            return None
        for instant in self.cron_times(now - TICK):
            if instant > now + HORIZON:
                return None
            if self.in_window(instant):
                return instant
        return None

    def latest_run(self, after: datetime, until: datetime) -> datetime | None:
        """The latest cron time inside the window in (after, until]."""
        for instant in self.cron_times(until + TICK, reverse=True):
            if instant <= after:
                return None
            if self.in_window(instant):
                return instant
        return None


def next_run_time(policy: pb.BackupPolicy, now: datetime) -> datetime | None:
    """BackupPolicy.next_run_time: None without a schedule, while paused, or beyond a year."""
    plan = Plan.of(policy)
    return None if plan is None else plan.next_run(now)


def fill_next_run_time(policy: pb.BackupPolicy, now: datetime) -> pb.BackupPolicy:
    """The policy with its output-only next_run_time set (or cleared) for `now`."""
    policy.ClearField("next_run_time")
    upcoming = next_run_time(policy, now)
    if upcoming is not None:
        policy.next_run_time.FromDatetime(upcoming)
    return policy
