"""The scheduler's `Actions` in the server: storage for what it reads, Control for what it does.

A scheduled start is the operator's StartPolicy path with another `Origin`. The window's
end stops the computers whose agent reports a running job of the policy, however it was
started (by a session, a retry, or on the agent itself), and those whose agent could not
be asked: one may be running the job, so it gets the stop too and the session records
whether it received it (rule 1: nothing is left out for being unreachable).
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb

from .control import Control
from .fanout import AgentCallError, AgentTransport
from .origins import Origin
from .sessions import resolve_targets
from .storage.interface import Storage

log = logging.getLogger("backup_server.scheduling")

PAGE = 500


class ServerActions:
    """What the scheduler asks of this server process."""

    def __init__(
        self, storage: Storage, control: Control, transport: AgentTransport, deadline: float
    ) -> None:
        self._storage = storage
        self._control = control
        self._transport = transport
        self._deadline = deadline

    async def policies(self) -> list[pb.BackupPolicy]:
        found: list[pb.BackupPolicy] = []
        after = ""
        while True:
            page = await self._storage.list_policies(after, PAGE)
            found.extend(page)
            if len(page) < PAGE:
                return found
            after = page[-1].id

    async def latest_session(
        self, policy_id: str, with_results: bool = True
    ) -> pb.PolicySession | None:
        held = self._control.running.held()
        rows = await self._storage.list_sessions(policy_id, 0, 1, with_results)
        if not rows:
            return None
        # A session this process still runs or follows is newer in memory than stored,
        # its outcome too: the scheduler is woken when it becomes final there, before
        # it is stored, and decides the retry on it.
        live = held(rows[0][1].id)
        return live.snapshot(outcome_as_stored=False) if live is not None else rows[0][1]

    async def last_scheduled_start(self, policy_id: str) -> datetime | None:
        started = await self._storage.last_session_start(policy_id, pb.SESSION_TRIGGER_SCHEDULE)
        return None if started is None else datetime.fromtimestamp(started / 1e9, UTC)

    async def start(
        self,
        policy_id: str,
        trigger: pb.SessionTrigger,
        *,
        computer_names: Sequence[str] = (),
        retry_of_session_id: str = "",
        attempt: int = 0,
        warnings: Sequence[str] = (),
    ) -> pb.PolicySession:
        origin = Origin(
            trigger, tuple(computer_names), retry_of_session_id, attempt, tuple(warnings)
        )
        return await self._control.run_as(policy_id, pb.SESSION_ACTION_START, origin)

    async def stop_running(self, policy_id: str) -> pb.PolicySession | None:
        names = await self.computers_to_stop(policy_id)
        if not names:
            return None
        origin = Origin(pb.SESSION_TRIGGER_WINDOW, tuple(names))
        return await self._control.run_as(policy_id, pb.SESSION_ACTION_STOP, origin)

    async def computers_to_stop(self, policy_id: str) -> list[str]:
        """The policy's computers whose agent lists a running job of the policy, or could
        not be asked (unreachable, silent, or an answer that could not be read); asked at
        once."""
        policy, groups = await self._storage.get_policy_and_groups(policy_id)
        targets = [t for t in resolve_targets(policy, groups) if not t.skipped_because]
        request = agent_pb.ListJobsRequest(policy_id=policy_id).SerializeToString()

        async def runs(address: str) -> bool:
            try:
                reply = await self._transport.call(address, "ListJobs", request, self._deadline)
                jobs = agent_pb.ListJobsResponse.FromString(reply).jobs
            except AgentCallError as error:
                log.info("policy %s: cannot ask %s for its jobs: %s", policy_id, address, error)
                return True
            except DecodeError:
                return True
            return any(
                job.policy_id == policy_id and job.state == pb.JOB_STATE_RUNNING for job in jobs
            )

        answers = await asyncio.gather(*(runs(t.computer.address) for t in targets))
        return [t.computer.name for t, running in zip(targets, answers, strict=True) if running]
