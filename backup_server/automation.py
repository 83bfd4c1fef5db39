"""Edge checks and update-mask paths for a policy's schedule, backup window and retries.

Each rule raises InvalidArgument whose message starts with the field path
(`policy.schedule.cron: ...`), before anything is stored.
"""

from datetime import timedelta

from backup.errors import InvalidArgument
from backup.v1 import resources_pb2 as pb

from .schedule import check_cron, parse_clock, zone

RETRY_ATTEMPTS_MAX = 10
RETRY_INTERVAL_MAX = timedelta(days=7)
CRON_MAX = 200

# AIP-161: the nested fields UpdatePolicy may name one by one (`schedule.paused`).
NESTED_PATHS = {
    "schedule": ("cron", "time_zone", "paused"),
    "backup_window": ("start", "end", "time_zone"),
    "retry": ("attempts", "interval"),
}
UPDATE_PATHS = (
    *NESTED_PATHS,
    *(f"{parent}.{child}" for parent, children in NESTED_PATHS.items() for child in children),
)


def check_automation(policy: pb.BackupPolicy, field: str = "policy") -> None:
    """The schedule, the window and the retry policy, each field by its path."""
    if policy.HasField("schedule"):
        check_schedule(policy.schedule, f"{field}.schedule")
    if policy.HasField("backup_window"):
        check_window(policy.backup_window, f"{field}.backup_window")
    if policy.HasField("retry"):
        check_retry(policy.retry, f"{field}.retry")


def _check_zone(field: str, name: str) -> None:
    try:
        zone(name)
    except ValueError as error:
        raise InvalidArgument(field, str(error)) from None


def check_schedule(schedule: pb.Schedule, field: str) -> None:
    if not schedule.cron.strip():
        raise InvalidArgument(f"{field}.cron", "is required in a schedule")
    if len(schedule.cron) > CRON_MAX:
        raise InvalidArgument(
            f"{field}.cron", f"is {len(schedule.cron)} characters long; the limit is {CRON_MAX}"
        )
    try:
        check_cron(schedule.cron)
    except ValueError as error:
        raise InvalidArgument(f"{field}.cron", str(error)) from None
    _check_zone(f"{field}.time_zone", schedule.time_zone)


def check_window(window: pb.BackupWindow, field: str) -> None:
    for name in ("start", "end"):
        try:
            parse_clock(getattr(window, name))
        except ValueError as error:
            raise InvalidArgument(f"{field}.{name}", str(error)) from None
    if window.start == window.end:
        raise InvalidArgument(
            f"{field}.end", f"equals start ({window.start}): the window would be empty"
        )
    _check_zone(f"{field}.time_zone", window.time_zone)


def check_retry(retry: pb.RetryPolicy, field: str) -> None:
    if not 0 <= retry.attempts <= RETRY_ATTEMPTS_MAX:
        raise InvalidArgument(
            f"{field}.attempts",
            f"is {retry.attempts}; it must be between 0 and {RETRY_ATTEMPTS_MAX}",
        )
    seconds, nanos = retry.interval.seconds, retry.interval.nanos
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0) or abs(nanos) >= 10**9:
        raise InvalidArgument(f"{field}.interval", "is not a valid duration")
    interval = retry.interval.ToTimedelta()
    if interval < timedelta(0):
        raise InvalidArgument(f"{field}.interval", "must not be negative")
    if retry.attempts > 0 and interval == timedelta(0):
        raise InvalidArgument(f"{field}.interval", "must be positive when attempts > 0")
    if interval > RETRY_INTERVAL_MAX:
        raise InvalidArgument(
            f"{field}.interval", f"is {interval}; the limit is {RETRY_INTERVAL_MAX.days} days"
        )
