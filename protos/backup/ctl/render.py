"""How backupctl shows things: rich tables for people, the proto's JSON form for scripts."""

import os
import time

import click
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backup.v1 import resources_pb2 as pb

DELIVERY_STYLE = {
    pb.DELIVERY_PENDING: "dim",
    pb.DELIVERY_RECEIVED: "green",
    pb.DELIVERY_NOT_RECEIVED: "red",
    pb.DELIVERY_SKIPPED: "yellow",
    pb.DELIVERY_REJECTED: "red",
    pb.DELIVERY_CANCELLED: "magenta",
}
STATE_STYLE = {
    pb.SESSION_STATE_RUNNING: "cyan",
    pb.SESSION_STATE_SUCCESS: "green",
    pb.SESSION_STATE_WARNING: "yellow",
    pb.SESSION_STATE_FAILED: "red",
}
# Wide enough that a piped table keeps a detail on one line.
PIPE_WIDTH = 200


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); a pipe gets a wide one rather than 80 columns."""
    # No highlighting: it would colour the digits inside ids and addresses at random.
    probe = Console(stderr=stderr, highlight=False)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, highlight=False, width=int(os.environ.get("COLUMNS", PIPE_WIDTH)))


def json_text(message: Message) -> str:
    """The proto JSON form, lowerCamelCase, defaults included so scripts need no fallbacks."""
    return json_format.MessageToJson(message, indent=2, always_print_fields_with_no_presence=True)


def emit_json(message: Message) -> None:
    click.echo(json_text(message))


def word(enum_name: str, prefix: str) -> str:
    """DELIVERY_NOT_RECEIVED -> 'not received'."""
    return enum_name.removeprefix(prefix).replace("_", " ").lower()


def delivery_text(delivery: pb.Delivery) -> Text:
    name = word(pb.Delivery.Name(delivery), "DELIVERY_")
    return Text(name, style=DELIVERY_STYLE.get(delivery, ""))


def state_text(state: pb.SessionState) -> Text:
    return Text(
        pb.SessionState.Name(state).removeprefix("SESSION_STATE_"), STATE_STYLE.get(state, "")
    )


def when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp.seconds))


def latency(duration: duration_pb2.Duration) -> str:
    seconds = duration.ToNanoseconds() / 1e9
    if not seconds:
        return ""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def session_seconds(session: pb.PolicySession) -> float:
    if not session.HasField("end_time"):
        return time.time() - session.start_time.ToNanoseconds() / 1e9
    return (session.end_time.ToNanoseconds() - session.start_time.ToNanoseconds()) / 1e9


def results_table(session: pb.PolicySession) -> Table:
    table = Table()
    for column in ("computer", "address", "group", "delivery", "detail", "latency", "job id"):
        table.add_column(column, justify="right" if column == "latency" else "left")
    for result in session.computer_results:
        table.add_row(
            result.computer.name,
            result.computer.address,
            result.protection_group_id,
            delivery_text(result.delivery),
            result.detail,
            latency(result.latency),
            result.job_id,
        )
    return table


def counts(stats: pb.SessionStatistics, *, zeros: bool = True) -> str:
    """'2 received, 1 not received, ...': every delivery (zeros optional), pending if any."""
    parts = [
        (stats.received, "received"),
        (stats.not_received, "not received"),
        (stats.skipped, "skipped"),
        (stats.rejected, "rejected"),
        (stats.cancelled, "cancelled"),
    ]
    shown = [f"{count} {label}" for count, label in parts if count or zeros]
    if stats.pending:
        shown.append(f"{stats.pending} pending")
    return ", ".join(shown)


def statistics_line(session: pb.PolicySession) -> Text:
    """The one line that sums a session up."""
    action = word(pb.SessionAction.Name(session.action), "SESSION_ACTION_")
    line = Text(f"{action} {session.policy_id}: ")
    line.append_text(state_text(session.state))
    line.append(
        f" - {session.statistics.total} computers: {counts(session.statistics)}"
        f" ({session_seconds(session):.2f} s)"
    )
    return line


def show_session(session: pb.PolicySession) -> None:
    out = console()
    out.print(f"session {session.id}")
    out.print(results_table(session))
    out.print(statistics_line(session))
    for warning in session.warnings:
        out.print(Text(f"warning: {warning}", style="yellow"))


def sessions_table(sessions: list[pb.PolicySession]) -> Table:
    table = Table()
    for column in ("session", "policy", "action", "trigger", "attempt", "state", "started"):
        table.add_column(column, justify="right" if column == "attempt" else "left")
    table.add_column("seconds")
    for column in ("total", "received", "not received", "skipped", "rejected", "cancelled"):
        table.add_column(column, justify="right")
    for session in sessions:
        stats = session.statistics
        table.add_row(
            session.id,
            session.policy_id,
            word(pb.SessionAction.Name(session.action), "SESSION_ACTION_"),
            trigger_text(session),
            str(session.attempt),
            state_text(session.state),
            when(session.start_time),
            f"{session_seconds(session):.2f}",
            *(
                str(value)
                for value in (
                    stats.total,
                    stats.received,
                    stats.not_received,
                    stats.skipped,
                    stats.rejected,
                    stats.cancelled,
                )
            ),
        )
    return table


def schedule_text(policy: pb.BackupPolicy) -> str:
    if not policy.HasField("schedule"):
        return ""
    schedule = policy.schedule
    text = f"{schedule.cron} ({schedule.time_zone or 'UTC'})"
    return f"{text}, paused" if schedule.paused else text


def window_text(policy: pb.BackupPolicy) -> str:
    if not policy.HasField("backup_window"):
        return ""
    window = policy.backup_window
    zone = window.time_zone or policy.schedule.time_zone or "UTC"
    return f"{window.start}-{window.end} ({zone})"


def retry_text(policy: pb.BackupPolicy) -> str:
    if not policy.retry.attempts:
        return ""
    return f"{policy.retry.attempts} times, {policy.retry.interval.seconds} s apart"


def trigger_text(session: pb.PolicySession) -> str:
    return word(pb.SessionTrigger.Name(session.trigger), "SESSION_TRIGGER_")


def computers_table(computers: list[pb.Computer]) -> Table:
    table = Table()
    table.add_column("name")
    table.add_column("address")
    for computer in computers:
        table.add_row(computer.name, computer.address)
    return table


def group_kind(kind: pb.ProtectionGroupKind) -> str:
    return word(pb.ProtectionGroupKind.Name(kind), "PROTECTION_GROUP_KIND_").replace(" ", "-")


def groups_table(groups: list[pb.ProtectionGroup]) -> Table:
    table = Table()
    for column in ("id", "name", "kind", "computers", "created"):
        table.add_column(column, justify="right" if column == "computers" else "left")
    for group in groups:
        table.add_row(
            group.id,
            group.name,
            group_kind(group.kind),
            str(len(group.computers)),
            when(group.create_time),
        )
    return table


def show_group(group: pb.ProtectionGroup) -> None:
    out = console()
    out.print(f"protection group {group.id}: {group.name} ({group_kind(group.kind)})")
    out.print("computers:")
    out.print(computers_table(list(group.computers)))


def policies_table(policies: list[pb.BackupPolicy]) -> Table:
    table = Table()
    for column in ("id", "name", "computers", "groups", "sources", "repository", "updated"):
        table.add_column(column, justify="right" if column == "computers" else "left")
    for column in ("schedule", "window", "next run"):
        table.add_column(column)
    for policy in policies:
        table.add_row(
            policy.id,
            policy.name,
            str(len(policy.computers)),
            ", ".join(policy.protection_group_ids),
            ", ".join(policy.source_paths),
            policy.repository,
            when(policy.update_time),
            schedule_text(policy),
            window_text(policy),
            when(policy.next_run_time),
        )
    return table


def show_policy(policy: pb.BackupPolicy) -> None:
    out = console()
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column()
    retention = policy.retention_points or "default"
    throttle = policy.throttle_bytes_per_second
    for label, value in (
        ("policy", f"{policy.id}: {policy.name}"),
        ("description", policy.description),
        ("sources", ", ".join(policy.source_paths)),
        ("repository", policy.repository),
        ("retention", f"{retention} restore points"),
        ("throttle", f"{throttle} bytes/s" if throttle else "unlimited"),
        ("groups", ", ".join(policy.protection_group_ids)),
        ("schedule", schedule_text(policy)),
        ("window", window_text(policy)),
        ("retries", retry_text(policy)),
        ("next run", when(policy.next_run_time)),
        ("created", when(policy.create_time)),
        ("updated", when(policy.update_time)),
    ):
        if value:
            details.add_row(label, value)
    out.print(details)
    if policy.computers:
        out.print("computers listed directly:")
        out.print(computers_table(list(policy.computers)))


def jobs_table(jobs: list[pb.Job]) -> Table:
    table = Table()
    for column in ("job", "policy", "session", "state", "started", "ended"):
        table.add_column(column)
    table.add_column("bytes", justify="right")
    table.add_column("files", justify="right")
    table.add_column("restore point")
    table.add_column("error")
    for job in jobs:
        table.add_row(
            job.id,
            job.policy_id,
            job.session_id or "(on the agent)",
            word(pb.JobState.Name(job.state), "JOB_STATE_"),
            when(job.start_time),
            when(job.end_time),
            f"{job.bytes_done}/{job.bytes_total}",
            str(job.files_done),
            job.restore_point_id,
            job.error,
        )
    return table
