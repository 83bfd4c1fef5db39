"""How the engine sees the job it runs, and the read limit it keeps for it."""

import time
from typing import Protocol

from .errors import JobCancelled

READ_BYTES = 1024 * 1024
# With a read limit, reads are small enough that a stop is noticed within this time.
CANCEL_CHECK_SECONDS = 0.1
LOCK_WAIT_SECONDS = 0.05


class JobControl(Protocol):
    """What the engine sees of the job it runs (agent_stub.jobs.RunningJob in the agent)."""

    def cancelled(self) -> bool: ...

    def sleep(self, seconds: float) -> None:
        """Waits, returning early if the job is cancelled."""

    def progress(
        self,
        bytes_total: int,
        bytes_done: int,
        files_done: int,
        bytes_read: int,
        bytes_written: int,
    ) -> None: ...

    def warn(self, message: str) -> None: ...


def check(job: JobControl) -> None:
    """Raises JobCancelled if the job was asked to stop."""
    if job.cancelled():
        raise JobCancelled


def wait_a_little(job: JobControl) -> None:
    """One short wait for a busy repository lock, ending the job if it is stopped."""
    job.sleep(LOCK_WAIT_SECONDS)
    check(job)


class Throttle:
    """Keeps the average read rate at or below `rate` bytes per second (0 = unlimited)."""

    def __init__(self, rate: int, job: JobControl) -> None:
        self._rate = rate
        self._job = job
        self._started = time.monotonic()
        self._bytes = 0

    @property
    def read_bytes(self) -> int:
        if not self._rate:
            return READ_BYTES
        return max(1, min(READ_BYTES, int(self._rate * CANCEL_CHECK_SECONDS)))

    def account(self, count: int) -> None:
        self._bytes += count
        if self._rate:
            ahead = self._bytes / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                self._job.sleep(ahead)
