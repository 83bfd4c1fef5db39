"""DeletePolicy (AIP-135 `force`): a policy whose jobs the server follows as running is
FAILED_PRECONDITION, naming them; with `force`, a recorded stop session runs first (its
commands delivered), then the policy is deleted. Its sessions stay, as for any deletion.

"Followed as running" is over the whole deployment: what this replica follows (its
memory, newest), and the stored rows of the sessions whose outcome is still RUNNING that
another replica runs or follows (written within a progress interval of each snapshot).
"""

import logging

from backup import validation
from backup.errors import FailedPrecondition

from .control import Control
from .followed import FollowedSessions
from .outcomes import job_running
from .policies import Policies
from .storage.interface import Storage

log = logging.getLogger("backup_server.deletion")

NAMED_AT_MOST = 5


class PolicyDeletion:
    """Deletes policies, minding the jobs the server follows for them."""

    def __init__(
        self,
        policies: Policies,
        control: Control,
        followed: FollowedSessions | None,
        storage: Storage,
    ) -> None:
        self._policies = policies
        self._control = control
        self._followed = followed
        self._storage = storage

    async def running_jobs(self, policy_id: str) -> list[tuple[str, str]]:
        """(computer name, job id) of the policy's jobs followed as running, here or on
        another replica."""
        found = dict.fromkeys(self._followed.running_jobs(policy_id) if self._followed else ())
        live = self._control.running.live
        for session in await self._storage.list_followed_sessions():
            if session.policy_id != policy_id or session.id in live:
                continue  # a session live here is newer in memory than in its rows
            for result in session.computer_results:
                if job_running(result):
                    found[(result.computer.name, result.job.id)] = None
        return list(found)

    async def delete(self, policy_id: str, force: bool) -> None:
        validation.require_id("policy_id", policy_id)
        running = await self.running_jobs(policy_id)
        if running and not force:
            named = ", ".join(f"{name} (job {job_id})" for name, job_id in running[:NAMED_AT_MOST])
            more = (
                f" and {len(running) - NAMED_AT_MOST} more" if len(running) > NAMED_AT_MOST else ""
            )
            raise FailedPrecondition(
                f"policy {policy_id!r} has {len(running)} running jobs: {named}{more}; "
                "stop the policy first, or delete it with force"
            )
        if running:
            stop = await self._control.stop_policy(policy_id)
            log.info(
                "policy %s: stop session %s before the forced deletion (%d running jobs)",
                policy_id,
                stop.id,
                len(running),
                extra={"session_id": stop.id},
            )
        await self._policies.delete_policy(policy_id)
