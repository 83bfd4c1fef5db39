"""A policy's schedule, backup window and retries on the command line, and pause/resume.

`policy create|update` take --schedule, --time-zone, --window, --retries and
--retry-interval; each sets nested fields and the matching update-mask paths
(`schedule.cron`, `retry.attempts`), so an update changes only what was given.
"""

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click
from google.protobuf import field_mask_pb2

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from . import client, render
from .root import complete_ids, connection_options, examples, settings

F = TypeVar("F", bound=Callable[..., Any])
DURATION = re.compile(r"([0-9]+)\s*(s|m|h|d)?", re.IGNORECASE)
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
WINDOW = re.compile(r"([0-9]{1,2}:[0-9]{2})-([0-9]{1,2}:[0-9]{2})")
FLAGS = ("schedule", "time_zone", "window", "retries", "retry_interval")


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: seconds, with an optional unit (90, 90s, 10m, 2h, 1d)."""
    if value is None:
        return None
    match = DURATION.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"expected a duration such as 600, 10m or 2h: {value!r}")
    return int(match.group(1)) * DURATION_UNITS[(match.group(2) or "").lower()]


def window(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    """Click callback: HH:MM-HH:MM as (start, end); the server checks the times themselves."""
    if value is None:
        return None
    match = WINDOW.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"expected HH:MM-HH:MM such as 22:00-06:00: {value!r}")
    return match.group(1).zfill(5), match.group(2).zfill(5)


def options(command: F) -> F:
    """The schedule flags of `policy create` and `policy update`."""
    for option in reversed(
        (
            click.option(
                "--schedule", metavar="CRON", help="Start by itself: 5-field cron ('0 2 * * *')."
            ),
            click.option(
                "--time-zone",
                metavar="TZ",
                help="IANA zone of the schedule and of the window given with it (default UTC).",
            ),
            click.option(
                "--window",
                metavar="HH:MM-HH:MM",
                callback=window,
                help="Backup window: scheduled and retry starts only inside it, running jobs "
                "stopped at its end; 22:00-06:00 spans midnight.",
            ),
            click.option(
                "--retries",
                type=click.IntRange(0, 10),
                metavar="N",
                help="Retry the computers that did not succeed up to N times (0: never).",
            ),
            click.option(
                "--retry-interval",
                callback=duration,
                metavar="DURATION",
                help="Time between an attempt's outcome and the next retry (600, 10m, 1h).",
            ),
        )
    ):
        command = option(command)
    return command


def apply(policy: pb.BackupPolicy, fields: dict[str, Any]) -> list[str]:
    """Takes the schedule flags out of `fields` into `policy`; returns the mask paths set."""
    given = {name: fields.pop(name, None) for name in FLAGS}
    paths: list[str] = []
    if given["schedule"] is not None:
        policy.schedule.cron = given["schedule"]
        paths.append("schedule.cron")
    if given["time_zone"] is not None:
        policy.schedule.time_zone = given["time_zone"]
        paths.append("schedule.time_zone")
    if given["window"] is not None:
        policy.backup_window.start, policy.backup_window.end = given["window"]
        paths.extend(("backup_window.start", "backup_window.end"))
        if given["time_zone"] is not None:
            policy.backup_window.time_zone = given["time_zone"]
            paths.append("backup_window.time_zone")
    if given["retries"] is not None:
        policy.retry.attempts = given["retries"]
        paths.append("retry.attempts")
    if given["retry_interval"] is not None:
        policy.retry.interval.FromSeconds(given["retry_interval"])
        paths.append("retry.interval")
    return paths


def _set_paused(policy_id: str, paused: bool) -> None:
    options = settings()
    change = pb.BackupPolicy(id=policy_id, schedule=pb.Schedule(paused=paused))
    with client.backup_server(options) as stub:
        updated = stub.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=change, update_mask=field_mask_pb2.FieldMask(paths=["schedule.paused"])
            ),
            timeout=options.timeout,
        )
    if options.json:
        render.emit_json(updated)
        return
    verb = "paused" if paused else "resumed"
    upcoming = render.when(updated.next_run_time)
    render.console().print(
        f"{verb} policy {updated.id}" + (f"; next run {upcoming}" if upcoming else "")
    )


POLICY_ID = click.argument("policy_id", metavar="ID", shell_complete=complete_ids("policy"))


def register(policy: click.Group) -> None:
    """Adds `policy pause` and `policy resume` to the policy group."""

    @policy.command("pause", epilog=examples("backupctl policy pause nightly"))
    @POLICY_ID
    @connection_options(default=False)
    def policy_pause(policy_id: str) -> None:
        """Pause the schedule: no scheduled starts, retries or catch-up until resumed."""
        _set_paused(policy_id, True)

    @policy.command("resume", epilog=examples("backupctl policy resume nightly"))
    @POLICY_ID
    @connection_options(default=False)
    def policy_resume(policy_id: str) -> None:
        """Resume the schedule (runs missed while paused are not made up)."""
        _set_paused(policy_id, False)

