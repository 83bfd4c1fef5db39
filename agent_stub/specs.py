"""The agent's edge to its engine: a received policy turned into the engine's plain input,
and what the agent remembers of the job afterwards."""

from pathlib import Path

from backup.v1 import resources_pb2 as pb

from . import identity
from .engine import BackupJob, JobControl, Repository, RepositoryError, run_backup


def backup_job(
    policy: pb.BackupPolicy,
    computer: str = "",
    agent_id: str = "",
    repository_ids: tuple[str, ...] = (),
    allowed_roots: tuple[str, ...] = (),
) -> BackupJob:
    """What the engine needs of `policy` to run its job on this computer."""
    return BackupJob(
        policy_id=policy.id,
        sources=tuple(policy.source_paths),
        repository=Path(policy.repository),
        retention_points=policy.retention_points,
        throttle_bytes_per_second=policy.throttle_bytes_per_second,
        computer=computer,
        agent_id=agent_id,
        repository_ids=repository_ids,
        allowed_roots=allowed_roots,
        exclude_patterns=tuple(policy.exclude_patterns),
    )


def run_job(
    data_dir: Path,
    computer: str,
    policy: pb.BackupPolicy,
    job_id: str,
    job: JobControl,
    allowed_roots: tuple[str, ...] = (),
) -> str:
    """Runs the policy's backup as this agent; remembers the repository it wrote to.

    `allowed_roots` (the agent's --allow-path, resolved) are checked again on what the job
    opens, not only on the names in the policy."""
    spec = backup_job(
        policy,
        computer=computer,
        agent_id=identity.agent_id(data_dir, create=True),
        repository_ids=identity.expected_ids(data_dir, policy.id, policy.repository),
        allowed_roots=allowed_roots,
    )
    point_id = run_backup(spec, job_id, job)
    try:
        repository_id = Repository.open(spec.repository).id
    except RepositoryError:
        return point_id
    if repository_id:
        identity.remember(data_dir, policy.id, policy.repository, repository_id)
    return point_id
