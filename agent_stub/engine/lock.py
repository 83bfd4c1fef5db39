"""The repository lock: backups and readers share it, chunk collection takes it alone.

It is a kernel lock (flock) on `<repository>/lock`, held through an open file. The
kernel drops it when its holder dies, however it dies, so the lock of a killed process
is broken by construction, at once, and never by guessing from a pid or an age. A
collection that finds the lock shared skips its turn instead of waiting, so it never
delays a backup; the next successful job collects instead.
"""

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "lock"


def create(root: Path) -> None:
    os.close(os.open(root / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o600))


@contextmanager
def shared(root: Path, pause: Callable[[], None] | None = None) -> Iterator[None]:
    """Holds the lock shared; while a collection holds it, calls `pause` (or blocks).

    `pause` lets a job keep checking for a stop while it waits; it may raise.
    """
    fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | (fcntl.LOCK_NB if pause else 0))
                break
            except BlockingIOError:
                assert pause is not None
                pause()
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive_if_free(root: Path) -> Iterator[bool]:
    """Holds the lock alone if nobody holds it now; yields whether it does."""
    fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
