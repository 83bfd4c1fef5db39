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
    """Keeps reads at or below `rate` bytes per second (0 = unlimited), as a token bucket.

    The bucket holds at most one read's worth, so time spent scanning or waiting for the
    repository lock earns no credit for a burst afterwards: the limit holds over any
    stretch of the job, not only on average since it began.
    """

    def __init__(self, rate: int, job: JobControl) -> None:
        self._rate = rate
        self._job = job
        self._tokens = float(self.read_bytes)
        self._last = time.monotonic()

    @property
    def read_bytes(self) -> int:
        if not self._rate:
            return READ_BYTES
        return max(1, min(READ_BYTES, int(self._rate * CANCEL_CHECK_SECONDS)))

    def account(self, count: int) -> None:
        if not self._rate:
            return
        now = time.monotonic()
        self._tokens = min(float(self.read_bytes), self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= count
        if self._tokens < 0:
            self._job.sleep(-self._tokens / self._rate)
