"""DeletePolicy (AIP-135 `force`): a policy whose jobs the server follows as running is
FAILED_PRECONDITION, naming them; with `force`, a recorded stop session runs first (its
commands delivered), then the policy is deleted. Its sessions stay, as for any deletion.

"Running" is a job followed as running, or a start command still being delivered (its job
may begin the next moment), over the whole deployment: the sessions in this replica's
memory (newest: delivering, being followed, or claimed), and the stored rows of the
sessions whose outcome is still RUNNING that another replica runs or follows (written
within a progress interval of each snapshot), or that this one stored and has not yet
begun to send.
"""

import logging

from backup import validation
from backup.errors import FailedPrecondition
from backup.v1 import resources_pb2 as pb

from .control import Control
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
        storage: Storage,
    ) -> None:
        self._policies = policies
        self._control = control
        self._storage = storage

    async def running_jobs(self, policy_id: str) -> list[str]:
        """The policy's computers with a job followed as running, or a start command still
        being delivered, here or on another replica: "name (job ID)" or "name (start being
        delivered)", each once."""
        # Taken before any await: a session that leaves memory during the storage read was
        # stored first, and one that enters it (a claim) is read from its rows.
        live = [held.session for held in self._control.running.live.values()]
        stored = await self._storage.list_followed_sessions()
        here = {session.id for session in live}
        found: dict[str, None] = {}
        for session in [*live, *(s for s in stored if s.id not in here)]:
            if session.policy_id != policy_id:
                continue
            for result in session.computer_results:
                if job_running(result):
                    found[f"{result.computer.name} (job {result.job.id})"] = None
                elif (
                    session.action == pb.SESSION_ACTION_START
                    and session.state == pb.SESSION_STATE_RUNNING
                    and result.delivery == pb.DELIVERY_PENDING
                ):
                    found[f"{result.computer.name} (start being delivered)"] = None
        return list(found)

    async def delete(self, policy_id: str, force: bool) -> None:
        validation.require_id("policy_id", policy_id)
        running = await self.running_jobs(policy_id)
        if running and not force:
            named = ", ".join(running[:NAMED_AT_MOST])
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
