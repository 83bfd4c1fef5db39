"""The agent's own state under its data dir: applied policies and the job history.

Each record is one JSON file written atomically (temporary file, fsync, rename), so a
killed agent leaves either the old record or the new one, never half of one. The data dir
and everything the agent creates in it are the agent user's alone (0700 directories, 0600
files) whatever the umask: the command line trusts the policies it finds there.
"""

import json
import stat
from pathlib import Path

from google.protobuf import json_format

from backup.v1 import resources_pb2 as pb

from .engine.files import PRIVATE_DIRECTORY, private_directory, write_atomically

__all__ = [
    "PRIVATE_DIRECTORY",
    "AgentStore",
    "check_private",
    "private_directory",
    "read_json",
    "read_policies",
    "read_policy",
    "write_atomically",
]


def check_private(directory: Path) -> None:
    """Raises SystemExit when others could write into `directory` (and so plant policies)."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SystemExit(
            f"{directory} is writable by other users (mode {mode:04o}): the agent trusts what "
            f"it finds there, so it will not start; chmod 700 {directory}"
        )


class AgentStore:
    """Applied policies in `policies/`, jobs in `jobs/`, both under the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._policies = data_dir / "policies"
        self._jobs = data_dir / "jobs"
        for directory in (data_dir, self._policies, self._jobs):
            private_directory(directory)

    def check_private(self) -> None:
        """Refuses a data dir, or a record folder in it, that others may write into."""
        for directory in (self.data_dir, self._policies, self._jobs):
            check_private(directory)

    def save_policy(self, policy: pb.BackupPolicy) -> None:
        write_atomically(self._policies / f"{policy.id}.json", json_format.MessageToJson(policy))

    def policies(self) -> list[pb.BackupPolicy]:
        return read_policies(self.data_dir)

    def save_job(self, job: pb.Job) -> None:
        write_atomically(self._jobs / f"{job.id}.json", json_format.MessageToJson(job))

    def delete_job(self, job_id: str) -> None:
        (self._jobs / f"{job_id}.json").unlink(missing_ok=True)

    def jobs(self) -> list[pb.Job]:
        return [json_format.Parse(path.read_text(), pb.Job()) for path in self._jobs.glob("*.json")]


def read_policy(data_dir: Path, policy_id: str) -> pb.BackupPolicy | None:
    """The policy this data dir's agent last received, or None."""
    path = data_dir / "policies" / f"{policy_id}.json"
    try:
        return json_format.Parse(path.read_text(), pb.BackupPolicy())
    except (FileNotFoundError, json_format.ParseError):
        return None


def read_policies(data_dir: Path) -> list[pb.BackupPolicy]:
    """Every policy this data dir's agent has applied, by id."""
    return [
        json_format.Parse(path.read_text(), pb.BackupPolicy())
        for path in sorted((data_dir / "policies").glob("*.json"))
    ]


def read_json(path: Path) -> dict[str, object] | None:
    try:
        content = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return content if isinstance(content, dict) else None
