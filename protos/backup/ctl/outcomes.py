"""Jobs' outcomes in backupctl: `start --wait` follows a session to its outcome, and a
session's computers show their job results.

`start --wait` exits 0 only when the session's outcome is SUCCESS (every targeted
computer's job succeeded), 3 otherwise, 1 on error.
"""

import time

import click
import grpc
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from backup import formats
from backup.ids import new_session_id
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from . import client, render
from .root import settings

EXIT_SUCCEEDED = 0
EXIT_NOT_ALL_SUCCEEDED = 3
EXIT_INTERRUPTED = 130
JOB_STYLE = {
    pb.JOB_STATE_RUNNING: "cyan",
    pb.JOB_STATE_SUCCEEDED: "green",
    pb.JOB_STATE_FAILED: "red",
    pb.JOB_STATE_STOPPED: "magenta",
}
# How long a watch that broke (the server restarting) keeps being reopened.
REWATCH_FOR = 60.0


def job_state(result: pb.ComputerResult) -> Text:
    if not result.job.id:
        return Text("none", style="dim")
    if result.job_unknown:
        return Text("unknown", style="yellow")
    state = result.job.state
    return Text(render.word(pb.JobState.Name(state), "JOB_STATE_"), JOB_STYLE.get(state, ""))


def jobs_table(session: pb.PolicySession, wide: bool = False) -> Table:
    """Each computer's delivery and job result. Names and ids are never cut; the delivery
    and the error wrap, and the restore point fits 100 columns beside them. -o wide adds
    the address, the job id and the files."""
    columns = [("computer", "id")]
    if wide:
        columns.append(("address", "id"))
    columns.append(("delivery", "text"))
    if wide:
        columns.append(("job", "id"))
    columns += [("job state", "id"), ("bytes", "number")]
    if wide:
        columns.append(("files", "number"))
    columns.append(("restore point or error", "text"))
    table = render.table(*columns)
    for result in session.computer_results:
        job = result.job
        delivery = render.delivery_text(result.delivery)
        if result.reconciled:
            delivery.append(" (reconciled)")
        cells: list[str | Text] = [result.computer.name]
        if wide:
            cells.append(result.computer.address)
        size = formats.size(job.bytes_done) if job.id else ""
        cells.append(delivery)
        if wide:
            cells.append(job.id)
        cells += [job_state(result), size]
        if wide:
            cells.append(str(job.files_done) if job.id else "")
        cells.append(job.restore_point_id or job.error or ("" if job.id else result.detail))
        table.add_row(*cells)
    return table


def outcome_line(session: pb.PolicySession) -> Text:
    stats = session.statistics
    line = Text("outcome: ")
    line.append_text(render.state_text(session.outcome))
    line.append(
        f" - jobs: {stats.jobs_succeeded} succeeded, {stats.jobs_failed} failed, "
        f"{stats.jobs_stopped} stopped, {stats.jobs_unknown} unknown, "
        f"{stats.jobs_running} running"
    )
    return line


def show_jobs(session: pb.PolicySession) -> None:
    """The job results of a session that follows jobs (nothing for older sessions)."""
    if session.outcome == pb.SESSION_STATE_UNSPECIFIED:
        return
    out = render.console()
    out.print(jobs_table(session, settings().wide))
    out.print(outcome_line(session))


def outcome_code(session: pb.PolicySession) -> int:
    succeeded = session.outcome == pb.SESSION_STATE_SUCCESS
    return EXIT_SUCCEEDED if succeeded else EXIT_NOT_ALL_SUCCEEDED


def final(session: pb.PolicySession) -> bool:
    """Delivered, and the outcome final (a server without outcomes: delivered)."""
    return session.state != pb.SESSION_STATE_RUNNING and (
        session.outcome != pb.SESSION_STATE_RUNNING
    )


class JobsBar:
    """Computers done of those targeted, and bytes, on stderr; nothing when no terminal."""

    def __init__(self, title: str) -> None:
        console = render.console(stderr=True)
        self.shown = console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("computers"),
            TextColumn("{task.fields[bytes]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(title, total=None, bytes="")

    def __enter__(self) -> "JobsBar":
        if self.shown:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self._progress.stop()

    def update(self, session: pb.PolicySession) -> None:
        targeted = [r for r in session.computer_results if r.delivery != pb.DELIVERY_SKIPPED]
        done = sum(
            1
            for r in targeted
            if r.delivery not in (pb.DELIVERY_PENDING, pb.DELIVERY_RECEIVED)
            or (r.job.id and (r.job.state != pb.JOB_STATE_RUNNING or r.job_unknown))
        )
        total = sum(r.job.bytes_total for r in targeted)
        moved = sum(r.job.bytes_done for r in targeted)
        self._progress.update(
            self._task,
            total=len(targeted),
            completed=done,
            bytes=f"{moved:,} of {total:,} bytes",
        )


def watch_to_outcome(
    stub: api_grpc.PolicyServiceStub, session_id: str, bar: JobsBar
) -> pb.PolicySession:
    """Every snapshot to the bar until the outcome is final; a broken watch is reopened."""
    request = api.WatchSessionRequest(session_id=session_id)
    gave_up_at = time.monotonic() + REWATCH_FOR
    last: pb.PolicySession | None = None
    while True:
        try:
            snapshot: pb.PolicySession
            for snapshot in stub.WatchSession(request):
                last = snapshot
                bar.update(snapshot)
                gave_up_at = time.monotonic() + REWATCH_FOR
                if final(snapshot):
                    return snapshot
        except grpc.RpcError as error:
            retry = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
            if error.code() not in retry or time.monotonic() > gave_up_at:
                raise
        if last is not None and final(last):
            return last
        time.sleep(0.5)


def start_and_wait(
    policy_id: str, computer_names: tuple[str, ...] = (), retry_of_session_id: str = ""
) -> None:
    """`backupctl start POLICY --wait`: the start, then its jobs followed to the outcome."""
    options = settings()
    session_id = new_session_id()
    with client.backup_server(options) as stub:
        stub.GetPolicy(api.GetPolicyRequest(policy_id=policy_id), timeout=options.timeout)
        call = stub.StartPolicy.future(
            api.StartPolicyRequest(
                policy_id=policy_id,
                session_id=session_id,
                computer_names=computer_names,
                retry_of_session_id=retry_of_session_id,
            )
        )
        try:
            call.result()  # delivery finished: the session exists
            with JobsBar(f"start {policy_id}") as bar:
                session = watch_to_outcome(stub, session_id, bar)
        except KeyboardInterrupt:
            click.echo(
                f"backupctl: interrupted; session {session_id} goes on in the server: "
                f"backupctl session {session_id}",
                err=True,
            )
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    if options.structured:
        render.emit(session, options.output)
    else:
        out = render.console()
        out.print(f"session {session.id}")
        out.print(jobs_table(session, options.wide))
        out.print(render.statistics_line(session))
        out.print(outcome_line(session))
        for warning in session.warnings:
            out.print(Text(f"warning: {warning}", style="yellow"))
    raise click.exceptions.Exit(outcome_code(session))
