"""How backupctl shows things: rich tables for people, the proto's JSON form for scripts.

Tables fit a 100-column terminal: ids, addresses and other names never wrap or get cut
(`column(..., "id")`); only free text wraps, folding a word too long for its column
rather than cutting it. `-o wide` adds the columns a glance does not need (latencies,
job and session ids, every count). Sizes, durations and moments read as `backup.formats`
writes them, the same in the agent's command line.
"""

import os
import time
from collections.abc import Iterable

from google.protobuf import duration_pb2, timestamp_pb2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backup import formats
from backup.v1 import resources_pb2 as pb

# The documents (-o json, -o yaml) live beside the tables; callers reach both here.
from .documents import document as document
from .documents import emit as emit
from .documents import emit_json as emit_json
from .documents import json_text as json_text
from .documents import yaml_text as yaml_text

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
# -o json and -o yaml print the answer as one document; text and wide print tables.
STRUCTURED = ("json", "yaml")


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); a pipe gets a wide one rather than 80 columns."""
    # No highlighting: it would colour the digits inside ids and addresses at random.
    probe = Console(stderr=stderr, highlight=False)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, highlight=False, width=int(os.environ.get("COLUMNS", PIPE_WIDTH)))


def table(*columns: tuple[str, str]) -> Table:
    """A table of (header, kind) columns: kind "id" never wraps nor is cut, "number" is
    right-aligned and never wraps, "text" wraps (folding, never cutting, a long word)."""
    made = Table()
    for header, kind in columns:
        if kind == "text":
            made.add_column(header, overflow="fold")
        else:
            made.add_column(header, no_wrap=True, justify="right" if kind == "number" else "left")
    return made


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
    return formats.moment(stamp.ToNanoseconds() / 1e9)


def latency(duration: duration_pb2.Duration) -> str:
    seconds = duration.ToNanoseconds() / 1e9
    return formats.duration(seconds) if seconds else ""


def session_seconds(session: pb.PolicySession) -> float:
    if not session.HasField("end_time"):
        return time.time() - session.start_time.ToNanoseconds() / 1e9
    return (session.end_time.ToNanoseconds() - session.start_time.ToNanoseconds()) / 1e9


def results_table(session: pb.PolicySession, wide: bool = False) -> Table:
    """Each computer's delivery; the detail names the job (-o wide: latency, job id too)."""
    columns = [("computer", "id"), ("address", "id"), ("group", "id"), ("delivery", "id")]
    columns.append(("detail", "text"))
    if wide:
        columns += [("latency", "number"), ("job id", "id")]
    shown = table(*columns)
    for result in session.computer_results:
        cells: list[str | Text] = [
            result.computer.name,
            result.computer.address,
            result.protection_group_id,
            delivery_text(result.delivery),
            result.detail,
        ]
        if wide:
            cells += [latency(result.latency), result.job_id]
        shown.add_row(*cells)
    return shown


def outcome_text(session: pb.PolicySession) -> Text:
    """The outcome of the session's jobs; "-" for a session stored before outcomes."""
    if session.outcome == pb.SESSION_STATE_UNSPECIFIED:
        return Text("-", style="dim")
    return state_text(session.outcome)


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
        f" - {formats.plural(session.statistics.total, 'computer')}: "
        f"{counts(session.statistics)} ({formats.duration(session_seconds(session))})"
    )
    return line


def show_session(session: pb.PolicySession, wide: bool = False) -> None:
    out = console()
    out.print(f"session {session.id}")
    out.print(results_table(session, wide))
    out.print(statistics_line(session))
    for warning in session.warnings:
        out.print(Text(f"warning: {warning}", style="yellow"))


SESSION_COUNTS = ("total", "received", "not received", "skipped", "rejected", "cancelled")


def sessions_table(sessions: list[pb.PolicySession], wide: bool = False) -> Table:
    """One session a row, with what started it, its delivery state and its jobs' outcome;
    the deliveries as one phrase (-o wide: how long it took, and a column per count)."""
    columns = [("session", "id"), ("policy", "id"), ("action", "id"), ("trigger", "id")]
    columns += [("attempt", "number"), ("state", "id"), ("outcome", "id"), ("started", "text")]
    if wide:
        columns.append(("took", "number"))
        columns += [(name, "number") for name in SESSION_COUNTS]
    else:
        columns.append(("deliveries", "text"))
    shown = table(*columns)
    for session in sessions:
        stats = session.statistics
        cells: list[str | Text] = [
            session.id,
            session.policy_id,
            word(pb.SessionAction.Name(session.action), "SESSION_ACTION_"),
            trigger_text(session),
            str(session.attempt),
            state_text(session.state),
            outcome_text(session),
            when(session.start_time),
        ]
        if wide:
            cells.append(formats.duration(session_seconds(session)))
            cells += [
                str(value)
                for value in (
                    stats.total,
                    stats.received,
                    stats.not_received,
                    stats.skipped,
                    stats.rejected,
                    stats.cancelled,
                )
            ]
        else:
            cells.append(counts(stats, zeros=False))
        shown.add_row(*cells)
    return shown


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


def computers_table(computers: Iterable[pb.Computer]) -> Table:
    shown = table(("name", "id"), ("address", "id"))
    for computer in computers:
        shown.add_row(computer.name, computer.address)
    return shown


def group_kind(kind: pb.ProtectionGroupKind) -> str:
    return word(pb.ProtectionGroupKind.Name(kind), "PROTECTION_GROUP_KIND_").replace(" ", "-")


def groups_table(groups: list[pb.ProtectionGroup]) -> Table:
    shown = table(
        ("id", "id"), ("name", "text"), ("kind", "id"), ("computers", "number"), ("created", "text")
    )
    for group in groups:
        shown.add_row(
            group.id,
            group.name,
            group_kind(group.kind),
            str(len(group.computers)),
            when(group.create_time),
        )
    return shown


def show_group(group: pb.ProtectionGroup) -> None:
    out = console()
    out.print(f"protection group {group.id}: {group.name} ({group_kind(group.kind)})")
    out.print(f"{formats.plural(len(group.computers), 'computer')}:")
    out.print(computers_table(group.computers))


def policies_table(policies: list[pb.BackupPolicy]) -> Table:
    shown = table(
        ("id", "id"),
        ("name", "text"),
        ("computers", "number"),
        ("groups", "text"),
        ("sources", "text"),
        ("repository", "text"),
        ("updated", "text"),
        ("schedule", "text"),
        ("window", "text"),
        ("next run", "text"),
    )
    for policy in policies:
        shown.add_row(
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
    return shown


def throttle(bytes_per_second: int) -> str:
    """'20.0 MiB/s (20971520 bytes/s)': readable, and exactly what the policy holds."""
    if not bytes_per_second:
        return "unlimited"
    return f"{formats.size(bytes_per_second)}/s ({bytes_per_second} bytes/s)"


def show_policy(policy: pb.BackupPolicy) -> None:
    out = console()
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold", no_wrap=True)
    details.add_column(overflow="fold")
    retention = (
        formats.plural(policy.retention_points, "restore point")
        if policy.retention_points
        else "default (7 restore points)"
    )
    for label, value in (
        ("policy", f"{policy.id}: {policy.name}"),
        ("description", policy.description),
        ("sources", ", ".join(policy.source_paths)),
        ("excludes", ", ".join(policy.exclude_patterns)),
        ("repository", policy.repository),
        ("retention", retention),
        ("throttle", throttle(policy.throttle_bytes_per_second)),
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
        out.print(computers_table(policy.computers))


def job_state(job: pb.Job) -> str:
    """'succeeded', or 'running 42%' while the job runs and its total is known."""
    state = word(pb.JobState.Name(job.state), "JOB_STATE_")
    if job.state == pb.JOB_STATE_RUNNING and job.bytes_total:
        state += f" {100 * job.bytes_done // job.bytes_total}%"
    return state


def jobs_table(jobs: list[pb.Job], wide: bool = False) -> Table:
    """An agent's jobs and the restore point each made, or its error (-o wide adds the
    session, the times, the bytes and files done)."""
    columns = [("job", "id"), ("policy", "id")]
    if wide:
        columns += [("session", "id"), ("started", "text"), ("ended", "text")]
        columns += [("bytes", "number"), ("files", "number")]
    columns += [("state", "id"), ("restore point", "id"), ("error", "text")]
    shown = table(*columns)
    for job in jobs:
        cells = [job.id, job.policy_id]
        if wide:
            cells += [
                job.session_id or "(on the agent)",
                when(job.start_time),
                when(job.end_time),
                f"{job.bytes_done}/{job.bytes_total}",
                str(job.files_done),
            ]
        cells += [job_state(job), job.restore_point_id, job.error]
        shown.add_row(*cells)
    return shown
