"""What can go wrong in the engine, in the operator's words.

    EngineError
    ├── JobCancelled       the job was asked to stop (not a failure)
    ├── BackupFailed       a backup cannot go on; the message is the job's error
    ├── RepositoryError    a repository cannot be used: missing, not one, unknown format
    │   └── DamagedData    a chunk or manifest does not hold what was written
    ├── PointNotFound      no restore point has that id
    └── RestoreRefused     a restore would write outside its target, or cannot write there

Every message is one line meant for a person; the command line prints it as it is.
"""


class EngineError(Exception):
    """Anything the engine refuses or cannot do; str() is the one line to show."""


class JobCancelled(EngineError):
    """The job was asked to stop."""


class BackupFailed(EngineError):
    """The job cannot go on; the message says why, for the job's error field."""


class RepositoryError(EngineError):
    """The repository cannot be used as asked."""


class DamagedData(RepositoryError):
    """Stored data does not match its name or checksum: `subject` says which data."""

    def __init__(self, subject: str, problem: str) -> None:
        super().__init__(f"{subject}: {problem}")
        self.subject = subject
        self.problem = problem


class PointNotFound(EngineError):
    """No restore point with that id."""


class RestoreRefused(EngineError):
    """The restore was refused before or while writing."""
