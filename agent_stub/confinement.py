"""Which paths this agent lets a policy read and write: `--allow-path` roots.

The server is not trusted to send sensible paths (a policy could otherwise back up
/etc/shadow into a repository of the caller's choosing). Every source path and the
repository are resolved (symlinks followed, as far as the path exists) and must lie
inside one of the roots, themselves resolved once at start-up.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from backup.errors import FailedPrecondition
from backup.paths import is_within
from backup.v1 import resources_pb2 as pb
from backup.validation import shown


class AllowedPaths:
    """The roots a policy's paths must stay inside; none means every path is allowed."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [os.path.realpath(root) for root in roots]

    @property
    def unrestricted(self) -> bool:
        return not self.roots

    def check(self, policy: pb.BackupPolicy, field: str = "policy") -> None:
        """Raises FailedPrecondition naming the first path outside every root."""
        if self.unrestricted:
            return
        for index, path in enumerate(policy.source_paths):
            self._check(f"{field}.source_paths[{index}]", path)
        self._check(f"{field}.repository", policy.repository)

    def _check(self, field: str, path: str) -> None:
        resolved = os.path.realpath(path)
        if any(is_within(resolved, root) for root in self.roots):
            return
        via = f" (it resolves to {shown(resolved)})" if resolved != os.path.normpath(path) else ""
        raise FailedPrecondition(
            f"{field}: {shown(path)}{via} is outside the paths this agent allows", field
        )
