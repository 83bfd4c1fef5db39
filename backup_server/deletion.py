"""DeletePolicy (AIP-135 `force`): a policy whose jobs the server follows as running is
FAILED_PRECONDITION, naming them; with `force`, a recorded stop session runs first (its
commands delivered), then the policy is deleted. Its sessions stay, as for any deletion.
"""

import logging

from backup import validation
from backup.errors import FailedPrecondition

from .control import Control
from .followed import FollowedSessions
from .policies import Policies

log = logging.getLogger("backup_server.deletion")

NAMED_AT_MOST = 5


class PolicyDeletion:
    """Deletes policies, minding the jobs the server follows for them."""

    def __init__(
        self, policies: Policies, control: Control, followed: FollowedSessions | None
    ) -> None:
        self._policies = policies
        self._control = control
        self._followed = followed

    async def delete(self, policy_id: str, force: bool) -> None:
        validation.require_id("policy_id", policy_id)
        running = self._followed.running_jobs(policy_id) if self._followed else []
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
