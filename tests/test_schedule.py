"""Cron times in a time zone, daylight saving, backup windows and next_run_time."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backup.v1 import resources_pb2 as pb
from backup_server.schedule import Plan, Window, check_cron, next_run_time, parse_clock, zone

NEW_YORK = ZoneInfo("America/New_York")


def policy(cron: str = "", tz: str = "", window: tuple[str, str, str] | None = None,
           paused: bool = False) -> pb.BackupPolicy:
    made = pb.BackupPolicy(id="p")
    if cron:
        made.schedule.CopyFrom(pb.Schedule(cron=cron, time_zone=tz, paused=paused))
    if window:
        made.backup_window.CopyFrom(pb.BackupWindow(start=window[0], end=window[1], time_zone=window[2]))
    return made


def runs(plan: Plan, start: datetime, end: datetime) -> list[datetime]:
    found = []
    for instant in plan.cron_times(start - timedelta(microseconds=1)):
        if instant >= end:
            return found
        found.append(instant)
    return found


def plan_of(*args: object, **kwargs: object) -> Plan:
    made = Plan.of(policy(*args, **kwargs))  # type: ignore[arg-type]
    assert made is not None
    return made


def test_an_hourly_schedule_runs_168_times_in_a_week_on_the_hour() -> None:
    """'0 * * * *' in UTC gives one run per hour for seven days, each on the hour."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    found = runs(plan_of("0 * * * *"), start, start + timedelta(days=7))
    assert len(found) == 168
    assert all(t.minute == 0 and t.second == 0 for t in found)
    assert found[0] == start and found[-1] == start + timedelta(days=7, hours=-1)


def test_weekday_schedule_skips_the_weekend() -> None:
    """'30 2 * * 1-5' runs Monday to Friday at 02:30 local time and not on Saturday or Sunday."""
    start = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
    found = runs(plan_of("30 2 * * 1-5", "Europe/Berlin"), start, start + timedelta(days=7))
    local = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in found]
    assert [t.isoweekday() for t in local] == [1, 2, 3, 4, 5]
    assert all((t.hour, t.minute) == (2, 30) for t in local)


def test_spring_forward_skips_the_time_that_does_not_exist() -> None:
    """On 2026-03-08 in New York 02:30 does not exist: that day has no run, the days around it do."""
    start = datetime(2026, 3, 6, tzinfo=NEW_YORK)
    found = [t.astimezone(NEW_YORK) for t in runs(plan_of("30 2 * * *", "America/New_York"), start, start + timedelta(days=4))]
    assert [t.day for t in found] == [6, 7, 9]
    assert all((t.hour, t.minute) == (2, 30) for t in found)


def test_fall_back_runs_a_repeated_time_once() -> None:
    """On 2026-11-01 in New York 01:30 happens twice: the schedule runs once, at the first (EDT)."""
    start = datetime(2026, 10, 31, tzinfo=NEW_YORK)
    found = runs(plan_of("30 1 * * *", "America/New_York"), start, start + timedelta(days=3))
    assert len(found) == 3
    assert found[1] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT is UTC-4


def test_every_quarter_hour_across_fall_back_runs_each_wall_time_once() -> None:
    """'*/15' from 00:00 to 03:00 local on the fall-back day: 12 runs in 4 real hours, none twice."""
    start = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # 00:00 EDT
    end = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)  # 03:00 EST
    found = runs(plan_of("*/15 * * * *", "America/New_York"), start, end)
    walls = [t.astimezone(NEW_YORK).strftime("%H:%M") for t in found]
    assert len(found) == len(set(walls)) == 12
    assert found == sorted(found)


def test_a_week_across_spring_forward_in_real_hours() -> None:
    """An hourly schedule over the week of 2026-03-08 in New York runs 167 times: one hour is gone."""
    start = datetime(2026, 3, 5, tzinfo=NEW_YORK)
    found = runs(plan_of("0 * * * *", "America/New_York"), start, start + timedelta(days=7))
    assert len(found) == 167
    assert len(set(found)) == 167


def test_reverse_search_finds_the_latest_run_in_a_range() -> None:
    """latest_run returns the newest cron time in (after, until] and None when there is none."""
    plan = plan_of("0 3 * * *", "America/New_York")
    after = datetime(2026, 3, 1, tzinfo=UTC)
    until = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert plan.latest_run(after, until) == datetime(2026, 3, 10, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert plan.latest_run(until - timedelta(hours=1), until) is None
    exactly = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    assert plan.latest_run(after, exactly) == exactly


def test_latest_run_inside_the_repeated_hour_sees_the_first_pass() -> None:
    """At 01:45 EST (the second pass of the hour) the latest run is 01:50 EDT of the first pass: wall times do not run twice."""
    plan = plan_of("*/10 * * * *", "America/New_York")
    second_pass = datetime(2026, 11, 1, 6, 45, tzinfo=UTC)  # 01:45 EST
    latest = plan.latest_run(second_pass - timedelta(hours=3), second_pass)
    assert latest == datetime(2026, 11, 1, 5, 50, tzinfo=UTC)  # 01:50 EDT


def test_window_spanning_midnight() -> None:
    """A 22:00-06:00 window contains 23:00 and 05:59, not 06:00 or 12:00, and ends at the next 06:00."""
    window = Window(parse_clock("22:00"), parse_clock("06:00"), UTC)
    day = datetime(2026, 6, 1, tzinfo=UTC)
    assert window.contains(day.replace(hour=23))
    assert window.contains(day.replace(hour=5, minute=59))
    assert not window.contains(day.replace(hour=6))
    assert not window.contains(day.replace(hour=12))
    assert window.end_after(day.replace(hour=23)) == day.replace(day=2, hour=6)
    assert window.opens_at_or_after(day.replace(hour=12)) == day.replace(hour=22)
    assert window.opens_at_or_after(day.replace(hour=23)) == day.replace(hour=23)


def test_next_run_time_is_window_aware() -> None:
    """An hourly schedule with a 22:00-06:00 window next runs at 22:00 when asked at noon."""
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    made = policy("0 * * * *", window=("22:00", "06:00", ""))
    assert next_run_time(made, noon) == noon.replace(hour=22)
    assert next_run_time(made, noon.replace(hour=22)) == noon.replace(hour=22)


def test_window_time_zone_defaults_to_the_schedules() -> None:
    """An empty window time zone means the schedule's zone, and UTC without a schedule."""
    with_schedule = Window.of(policy("0 * * * *", "Asia/Tokyo", ("01:00", "02:00", "")))
    assert with_schedule is not None and with_schedule.where == ZoneInfo("Asia/Tokyo")
    alone = Window.of(policy(window=("01:00", "02:00", "")))
    assert alone is not None and alone.where == UTC


def test_next_run_time_is_empty_when_paused_unscheduled_or_beyond_a_year() -> None:
    """Paused, without a schedule, or with a cron that never meets the window: no next run."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert next_run_time(policy("0 * * * *", paused=True), now) is None
    assert next_run_time(policy(), now) is None
    assert next_run_time(policy("0 3 * * *", window=("04:00", "05:00", "")), now) is None
    assert next_run_time(policy("0 0 29 2 *"), now) is None  # next 29 February is 2028


@pytest.mark.parametrize("expression", ["61 * * * *", "* * * *", "x y z a b", "0 0 31 2 *", "* * * * * *"])
def test_bad_cron_expressions_are_refused(expression: str) -> None:
    """Out-of-range fields, the wrong number of fields and impossible dates are not cron."""
    with pytest.raises(ValueError):
        check_cron(expression)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "a" * 100])
def test_unknown_zones_are_refused(name: str) -> None:
    """A zone that tzdata does not know, or a path, is refused."""
    with pytest.raises(ValueError):
        zone(name)
