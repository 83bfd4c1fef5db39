"""The backup engine: copies a policy's source paths into a new restore point.

A restore point is written under `<repository>/tmp/` and appears under
`<repository>/points/` only by one atomic rename once every byte is on disk, so a job
that is stopped, fails or is killed leaves no restore point and touches no earlier one.
The job runner reaches the engine only through `run_backup` and `JobControl`.
"""

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from backup.v1 import resources_pb2 as pb

CHUNK_BYTES = 1024 * 1024
# With a throttle, chunks are small enough that a stop is noticed within this time.
CANCEL_CHECK_SECONDS = 0.1


class JobCancelled(Exception):
    """The job was asked to stop."""


class BackupFailed(Exception):
    """The job cannot go on; the message says why, for the job's error field."""


class JobControl(Protocol):
    """What the engine sees of the job it runs."""

    def cancelled(self) -> bool: ...

    def sleep(self, seconds: float) -> None:
        """Waits, returning early if the job is cancelled."""

    def progress(self, bytes_total: int, bytes_done: int, files_done: int) -> None: ...

    def warn(self, message: str) -> None: ...


@dataclass(frozen=True)
class SourceFile:
    path: Path
    stored_as: Path
    size: int


def new_point_id() -> str:
    return time.strftime("rp-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(4)


def _walk(source: Path, job: JobControl) -> Iterator[SourceFile]:
    """Every regular file under `source` (or `source` itself), in a stable order."""
    relative = Path(str(source).lstrip("/"))
    if source.is_file():
        yield SourceFile(source, relative, source.stat().st_size)
        return

    def unreadable(error: OSError) -> None:
        job.warn(f"skipped {error.filename}: {error.strerror}")

    for directory, subdirectories, files in os.walk(source, onerror=unreadable):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory, name)
            try:
                info = path.lstat()
            except OSError as error:
                job.warn(f"skipped {path}: {error.strerror}")
                continue
            if path.is_file() and not path.is_symlink():
                yield SourceFile(path, relative / path.relative_to(source), info.st_size)


class _Throttle:
    """Keeps the average rate at or below `rate` bytes per second (0 = unlimited)."""

    def __init__(self, rate: int, job: JobControl) -> None:
        self._rate = rate
        self._job = job
        self._started = time.monotonic()
        self._bytes = 0

    @property
    def chunk_bytes(self) -> int:
        if not self._rate:
            return CHUNK_BYTES
        return max(1, min(CHUNK_BYTES, int(self._rate * CANCEL_CHECK_SECONDS)))

    def account(self, count: int) -> None:
        self._bytes += count
        if self._rate:
            ahead = self._bytes / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                self._job.sleep(ahead)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Progress:
    def __init__(self, job: JobControl, bytes_total: int) -> None:
        self.job = job
        self.bytes_total = bytes_total
        self.bytes_done = 0
        self.files_done = 0

    def add(self, bytes_done: int = 0, files_done: int = 0) -> None:
        self.bytes_done += bytes_done
        self.files_done += files_done
        self.job.progress(self.bytes_total, self.bytes_done, self.files_done)


def _copy(file: SourceFile, target: Path, throttle: _Throttle, progress: _Progress) -> None:
    """Copies one file chunk by chunk, checking for a stop between chunks."""
    with open(file.path, "rb") as source, open(target, "wb") as out:
        while chunk := source.read(throttle.chunk_bytes):
            if progress.job.cancelled():
                raise JobCancelled
            out.write(chunk)
            progress.add(bytes_done=len(chunk))
            throttle.account(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    progress.add(files_done=1)


def run_backup(policy: pb.BackupPolicy, job_id: str, job: JobControl) -> str:
    """Backs the policy's sources up into a new restore point; returns its id."""
    repository = Path(policy.repository)
    sources = [Path(path) for path in policy.source_paths]
    for source in sources:
        if not source.exists():
            raise BackupFailed(f"source path {source} does not exist")
    point_id = new_point_id()
    staging = repository / "tmp" / point_id
    points = repository / "points"
    try:
        points.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True)
        files = [file for source in sources for file in _walk(source, job)]
        progress = _Progress(job, sum(file.size for file in files))
        progress.add()
        throttle = _Throttle(policy.throttle_bytes_per_second, job)
        directories: set[Path] = set()
        for file in files:
            if job.cancelled():
                raise JobCancelled
            target = staging / "tree" / file.stored_as
            target.parent.mkdir(parents=True, exist_ok=True)
            directories.add(target.parent)
            try:
                _copy(file, target, throttle, progress)
            except PermissionError as error:
                job.warn(f"skipped {file.path}: {error.strerror}")
        manifest = {
            "id": point_id,
            "policy_id": policy.id,
            "job_id": job_id,
            "create_ns": time.time_ns(),
            "file_count": progress.files_done,
            "total_bytes": progress.bytes_done,
        }
        (staging / "point.json").write_text(json.dumps(manifest))
        for directory in [*sorted(directories), staging]:
            _fsync_directory(directory)
        if job.cancelled():
            raise JobCancelled
        os.rename(staging, points / point_id)
        _fsync_directory(points)
        return point_id
    except OSError as error:
        raise BackupFailed(f"{error.strerror}: {error.filename}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(repository: Path) -> None:
    """Removes what killed jobs left under `<repository>/tmp/`."""
    shutil.rmtree(repository / "tmp", ignore_errors=True)
