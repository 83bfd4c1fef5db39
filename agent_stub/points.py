"""The backup chain on this computer: restore points in the repositories of the policies
this agent has applied, as ListRestorePoints and the command line see it.

Reads only: it never creates a repository, and it needs no running agent.
"""

import logging
from pathlib import Path

from backup.errors import NotFound
from backup.ids import newest_first
from backup.v1 import resources_pb2 as pb

from .engine import PointNotFound, PointSummary, Repository, RepositoryError
from .engine.manifest import POINT_ID
from .engine.repository import CONFIG_NAME
from .store import read_policies

log = logging.getLogger("agent_stub.points")


def restore_point(summary: PointSummary) -> pb.RestorePoint:
    point = pb.RestorePoint(
        id=summary.id,
        policy_id=summary.policy_id,
        job_id=summary.job_id,
        file_count=summary.file_count,
        total_bytes=summary.total_bytes,
        added_bytes=summary.added_bytes,
    )
    point.create_time.FromNanoseconds(summary.create_ns)
    return point


class BackupChain:
    """The restore points of the policies applied by the agent of `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def repositories(self, policy_id: str = "") -> list[tuple[Repository, set[str]]]:
        """Each repository once, with the applied policies that write to it.

        NotFound when `policy_id` names a policy this agent never received.
        """
        policies = read_policies(self.data_dir)
        if policy_id:
            policies = [policy for policy in policies if policy.id == policy_id]
            if not policies:
                raise NotFound(f"policy {policy_id!r} was never received by this agent")
        by_path: dict[str, set[str]] = {}
        for policy in policies:
            by_path.setdefault(policy.repository, set()).add(policy.id)
        found = []
        for path, policy_ids in sorted(by_path.items()):
            if not (Path(path) / CONFIG_NAME).exists():
                continue  # no job has written there yet
            try:
                found.append((Repository.open(Path(path)), policy_ids))
            except RepositoryError as error:
                log.warning("repository skipped: %s", error)
        return found

    def summaries(self, policy_id: str = "") -> list[tuple[Repository, PointSummary]]:
        """Every restore point of the applied policies (or of one), newest first."""
        found: list[tuple[Repository, PointSummary]] = []
        for repository, policy_ids in self.repositories(policy_id):
            try:
                summaries, damaged = repository.summaries()
            except OSError as error:
                log.warning("repository %s skipped: %s", repository.root, error)
                continue
            for damage in damaged:
                log.warning("not listed, run verify: %s", damage)
            wanted = {policy_id} if policy_id else policy_ids
            found.extend((repository, s) for s in summaries if s.policy_id in wanted)
        return newest_first(found, lambda pair: (pair[1].create_ns, pair[1].id))

    def list(self, policy_id: str = "") -> list[pb.RestorePoint]:
        return [restore_point(summary) for _, summary in self.summaries(policy_id)]

    def find(self, point_id: str) -> Repository:
        """The repository holding the restore point, damaged or not; PointNotFound if none."""
        if not POINT_ID.fullmatch(point_id):
            raise PointNotFound(f"{point_id[:80]!r} is not a restore point id")
        for repository, _ in self.repositories():
            if repository.manifest_path(point_id).exists():
                return repository
        raise PointNotFound(
            f"restore point {point_id[:80]!r} not found in the repositories of "
            f"the policies applied in {self.data_dir}"
        )
