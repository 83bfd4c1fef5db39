"""The agent's backup engine: deduplicated, incremental restore points in a repository.

    repository.py  the on-disk format: identity, restore points, tmp/
    chunkstore.py  chunks as files and in packs, the index, damage records
    manifest.py    what a restore point lists: files, directories, symlinks, chunks
    chunks.py      content-defined chunking (FastCDC) and zstd where it pays
    lock.py        lock files in the repository: backups share, collection goes alone
    scan.py        walking a policy's source paths, excludes applied
    beneath.py     opening what lies below a source root, never through a symlink
    backup.py      a backup job: `run_backup`, incremental forever
    retention.py   expiring a computer's old points, collecting unreferenced data
    restore.py     writing a point back to disk, never outside the target
    verify.py      re-reading every chunk a point needs, recording what is damaged
    repair.py      rebuilding the index from the packs
    packs.py       pack files of small chunks, and their index
    writer.py      storing a backup's new chunks on a thread pool
    job.py         a job's plain input (`BackupJob`) and its counters (`Progress`)
    files.py       atomic writes and durable directories

It imports nothing of the agent around it. The job runner reaches it only through
`run_backup` (given a `BackupJob`), `remove_stale_staging` and
`JobControl`; the command line and ListRestorePoints through `Repository`, `restore`
and `verify`. Errors are in errors.py.
"""

from .backup import remove_stale_staging, run_backup
from .control import JobControl
from .errors import (
    BackupFailed,
    DamagedData,
    EngineError,
    JobCancelled,
    PointNotFound,
    RepositoryError,
    RestoreRefused,
)
from .job import BackupJob, Progress
from .manifest import PointSummary
from .repair import Repaired, repair
from .repository import Repository
from .restore import Restored, restore
from .verify import Verified, verify

__all__ = [
    "BackupFailed",
    "BackupJob",
    "DamagedData",
    "EngineError",
    "JobCancelled",
    "JobControl",
    "PointNotFound",
    "PointSummary",
    "Progress",
    "Repository",
    "RepositoryError",
    "RestoreRefused",
    "Repaired",
    "Restored",
    "Verified",
    "remove_stale_staging",
    "repair",
    "restore",
    "run_backup",
    "verify",
]
