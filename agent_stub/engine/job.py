"""What a backup job needs from the agent, and what it reports while it runs.

`BackupJob` is built from the policy at the agent's edge (agent_stub.specs), so the engine
knows nothing of the wire types; `Progress` is the one place a job's counters live.
"""

import dataclasses
import time
from pathlib import Path

from .control import JobControl


@dataclasses.dataclass(frozen=True)
class BackupJob:
    """One backup: which policy and computer, what to read, where to write, what to keep.

    `repository_ids` are the ids this agent has seen at `repository` for this policy:
    when there are any, the repository must exist and have one of them (a missing one is
    an unmounted share, never a reason to start a new, empty repository).
    """

    policy_id: str
    sources: tuple[str, ...]
    repository: Path
    retention_points: int = 0
    throttle_bytes_per_second: int = 0
    computer: str = ""
    agent_id: str = ""
    repository_ids: tuple[str, ...] = ()
    # The agent's --allow-path roots, resolved: what is opened must lie inside them.
    allowed_roots: tuple[str, ...] = ()
    # Gitignore-style patterns of paths under the sources not to back up.
    exclude_patterns: tuple[str, ...] = ()


REPORT_SECONDS = 0.05


@dataclasses.dataclass
class Progress:
    """A job's counters. `bytes_done` counts finished files by their size (or what was read
    of them, if more) plus what was read so far of the file being read."""

    bytes_total: int = 0
    files_done: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    _finished: int = 0
    _current: int = 0
    _reported: float = 0.0

    @property
    def bytes_done(self) -> int:
        return self._finished + self._current

    def read(self, count: int) -> None:
        self.bytes_read += count
        self._current += count

    def file_finished(self, size: int, stored: bool = True) -> None:
        """The file being read (or skipped) is done; `stored` counts it in `files_done`."""
        self._finished += max(size, self._current)
        self._current = 0
        if stored:
            self.files_done += 1

    def report(self, job: JobControl, now: bool = False) -> None:
        """Tells the job, at most every REPORT_SECONDS unless `now`: many small files
        must not cost a report each."""
        clock = time.monotonic()
        if not now and clock - self._reported < REPORT_SECONDS:
            return
        self._reported = clock
        job.progress(
            max(self.bytes_total, self.bytes_done),
            self.bytes_done,
            self.files_done,
            self.bytes_read,
            self.bytes_written,
        )
