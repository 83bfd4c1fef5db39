"""The backup chain on this computer: its own restore points in every repository the
policies this agent applied write to or once wrote to, as ListRestorePoints and the
command line see it.

Reads only: it never creates a repository, and it needs no running agent. A repository
may be shared by many computers: only this agent's points are listed (and those written
before points named their computer, which nobody can tell apart).
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from backup.errors import NotFound
from backup.ids import newest_first
from backup.v1 import resources_pb2 as pb

from . import identity
from .engine import DamagedData, PointNotFound, PointSummary, Repository, RepositoryError
from .engine.manifest import POINT_ID
from .engine.repository import CONFIG_NAME
from .engine.restore import damaged_files
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
        computer=summary.computer,
    )
    point.create_time.FromNanoseconds(summary.create_ns)
    return point


@dataclass
class Found:
    """The repositories of the chain, and the remembered ones that are not there."""

    repositories: list[tuple[Repository, set[str]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class BackupChain:
    """The restore points of the policies applied by the agent of `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    @property
    def agent_id(self) -> str:
        return identity.agent_id(self.data_dir)

    def mine(self, summary: PointSummary) -> bool:
        return summary.agent_id in ("", self.agent_id)

    def find_repositories(self, policy_id: str = "") -> Found:
        """Each repository once, with the policies that write or wrote to it; `missing`
        says which remembered ones are gone or hold another repository.

        NotFound when `policy_id` names a policy this agent never received.
        """
        policies = read_policies(self.data_dir)
        if policy_id:
            policies = [policy for policy in policies if policy.id == policy_id]
            if not policies:
                raise NotFound(f"policy {policy_id!r} was never received by this agent")
        by_path: dict[str, set[str]] = {}
        expected: dict[str, set[str]] = {}
        for policy in policies:
            by_path.setdefault(policy.repository, set()).add(policy.id)
        for known in identity.known(self.data_dir, policy_id):
            by_path.setdefault(known.path, set()).add(known.policy_id)
            expected.setdefault(known.path, set()).add(known.id)
        found = Found()
        for path, policy_ids in sorted(by_path.items()):
            ids = expected.get(path, set())
            if not ids and not (Path(path) / CONFIG_NAME).exists():
                continue  # no job has written there yet
            try:
                repository = Repository.open(Path(path))
            except RepositoryError as error:
                if ids:
                    found.missing.append(
                        f"repository {path} is missing: expected id {sorted(ids)[0]}; "
                        "is the share mounted?"
                    )
                else:
                    log.warning("repository skipped: %s", error)
                continue
            if ids and repository.id not in ids:
                found.missing.append(
                    f"repository {path} has id {repository.id or '(none)'}, expected id "
                    f"{sorted(ids)[0]}: another repository is there"
                )
                continue
            found.repositories.append((repository, policy_ids))
        for problem in found.missing:
            log.warning("%s", problem)
        return found

    def repositories(self, policy_id: str = "") -> list[tuple[Repository, set[str]]]:
        return self.find_repositories(policy_id).repositories

    def summaries(self, policy_id: str = "") -> list[tuple[Repository, PointSummary]]:
        """This computer's restore points of the applied policies (or of one), newest first."""
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
            found.extend(
                (repository, s) for s in summaries if s.policy_id in wanted and self.mine(s)
            )
        return newest_first(found, lambda pair: (pair[1].create_ns, pair[1].id))

    def damaged_files(self, repository: Repository, point_id: str) -> list[str]:
        """The point's files that need data verify found damaged and no backup healed."""
        if not repository.damaged_chunks:
            return []
        try:
            return damaged_files(repository, repository.read_point(point_id).entries)
        except (DamagedData, PointNotFound):
            return []

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
