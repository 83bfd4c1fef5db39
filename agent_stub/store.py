"""The agent's own state under its data dir: applied policies and the job history.

Each record is one JSON file written atomically (temporary file, fsync, rename), so a
killed agent leaves either the old record or the new one, never half of one.
"""

import json
from pathlib import Path

from google.protobuf import json_format

from backup.v1 import resources_pb2 as pb

from .engine.files import write_atomically

__all__ = ["AgentStore", "read_json", "read_policies", "read_policy", "write_atomically"]


class AgentStore:
    """Applied policies in `policies/`, jobs in `jobs/`, both under the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._policies = data_dir / "policies"
        self._jobs = data_dir / "jobs"
        self._policies.mkdir(parents=True, exist_ok=True)
        self._jobs.mkdir(parents=True, exist_ok=True)

    def save_policy(self, policy: pb.BackupPolicy) -> None:
        write_atomically(self._policies / f"{policy.id}.json", json_format.MessageToJson(policy))

    def load_policy(self, policy_id: str) -> pb.BackupPolicy | None:
        return read_policy(self.data_dir, policy_id)

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
