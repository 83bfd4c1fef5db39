"""A small real disk for full-disk tests: a tmpfs of a few megabytes, filled on demand."""

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backup.v1.resources_pb2 import JOB_STATE_RUNNING

SIZE = "4m"
PAGE = 4096


class SmallDisk:
    """A mounted tmpfs at `path`; `fill` uses up every free byte, `free` gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        # Page by page: tmpfs allocates whole pages, so this leaves no room for any write.
        with open(self._filler, "ab", buffering=0) as filler:
            block = b"\0" * PAGE
            while True:
                try:
                    filler.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    return

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@contextmanager
def small_disk(where: Path, size: str = SIZE, mode: str = "0700") -> Iterator[SmallDisk]:
    """Mounts a tmpfs at `where` for the block, or skips the test saying why it cannot."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("full-disk test: mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"full-disk test: cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def final_job_saves_fail(store: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """Makes the agent store's `save_job` fail with ENOSPC for every record but a running
    job's (a disk that filled while the job ran); returns the real `save_job`."""
    original: Callable[[Any], None] = store.save_job

    def full_at_the_end(job: Any) -> None:
        if job.state != JOB_STATE_RUNNING:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(job)

    monkeypatch.setattr(store, "save_job", full_at_the_end)
    return original
