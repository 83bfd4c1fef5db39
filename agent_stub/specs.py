"""The agent's edge to its engine: a received policy turned into the engine's plain input."""

from pathlib import Path

from backup.v1 import resources_pb2 as pb

from .engine import BackupJob


def backup_job(
    policy: pb.BackupPolicy,
    computer: str = "",
    agent_id: str = "",
    repository_ids: tuple[str, ...] = (),
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
    )
