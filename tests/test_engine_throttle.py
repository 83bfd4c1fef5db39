"""The engine's read limit holds over any stretch of a job, not only on average."""

import threading
import time

from agent_stub.engine.control import Throttle


class Job:
    """Just enough of a job for the throttle: real sleeps, never cancelled."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def cancelled(self) -> bool:
        return self.stop.is_set()

    def sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)


def read_at(throttle: Throttle, total: int) -> float:
    began = time.monotonic()
    done = 0
    while done < total:
        count = min(throttle.read_bytes, total - done)
        throttle.account(count)
        done += count
    return time.monotonic() - began


def test_an_idle_start_earns_no_burst() -> None:
    """Half a second idle before reading (a scan, a lock wait) does not let 1 MiB through at once."""
    throttle = Throttle(1024 * 1024, Job())  # type: ignore[arg-type]
    time.sleep(0.5)
    assert read_at(throttle, 1024 * 1024) >= 0.8


def test_the_rate_holds_while_reading() -> None:
    """Reading 600 kB at 1 MB/s takes at least about 0.5 s and not much more."""
    throttle = Throttle(1_000_000, Job())  # type: ignore[arg-type]
    elapsed = read_at(throttle, 600_000)
    assert 0.45 <= elapsed < 2.0


def test_no_limit_never_waits() -> None:
    """A rate of 0 means unlimited: accounting never sleeps."""
    throttle = Throttle(0, Job())  # type: ignore[arg-type]
    assert read_at(throttle, 100 * 1024 * 1024) < 0.5
