"""Following a session while it runs: WatchSession snapshots drive a live progress bar."""

import time
from collections.abc import Callable
from types import TracebackType

import grpc
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from . import render

EXIT_ALL_RECEIVED = 0
EXIT_SOME_NOT_RECEIVED = 3
# While the StartPolicy call has not created the session yet, WatchSession answers
# NOT_FOUND; it is asked again this often until the session exists or the call ended.
RETRY_SECONDS = 0.05


def outcome_code(session: pb.PolicySession) -> int:
    """0 when every targeted computer received the command, else 3 (skipped: not targeted)."""
    stats = session.statistics
    missed = stats.not_received + stats.rejected + stats.cancelled + stats.pending
    return EXIT_ALL_RECEIVED if missed == 0 else EXIT_SOME_NOT_RECEIVED


class ProgressBar:
    """Deliveries so far on stderr, redrawn in place; nothing at all when stderr is no terminal."""

    def __init__(self, title: str) -> None:
        console = render.console(stderr=True)
        self.shown = console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID = self._progress.add_task(title, total=None, counts="starting")

    def __enter__(self) -> "ProgressBar":
        if self.shown:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.shown:
            self._progress.stop()

    def update(self, session: pb.PolicySession) -> None:
        stats = session.statistics
        self._progress.update(
            self._task,
            total=stats.total,
            completed=stats.total - stats.pending,
            counts=render.counts(stats, zeros=False),
        )


def watch(
    stub: api_grpc.PolicyServiceStub,
    session_id: str,
    show: Callable[[pb.PolicySession], None],
    call_ended: Callable[[], bool] | None = None,
) -> pb.PolicySession | None:
    """Shows each snapshot until the session finishes; returns the last one.

    With `call_ended` (the StartPolicy or StopPolicy call creating the session), NOT_FOUND
    means "not created yet" and any error means "ask the call": None is returned once the
    call has ended. Without it, errors are the caller's.
    """
    request = api.WatchSessionRequest(session_id=session_id)
    while True:
        try:
            snapshot: pb.PolicySession
            for snapshot in stub.WatchSession(request):
                show(snapshot)
                if snapshot.state != pb.SESSION_STATE_RUNNING:
                    return snapshot
        except grpc.RpcError as error:
            if call_ended is None:
                raise
            not_yet = error.code() == grpc.StatusCode.NOT_FOUND
            if not not_yet or call_ended():
                return None
        # A stream can end on a RUNNING snapshot when it began just as the session was
        # created; watching again picks the live session up.
        if call_ended is not None and call_ended():
            return None
        time.sleep(RETRY_SECONDS)
