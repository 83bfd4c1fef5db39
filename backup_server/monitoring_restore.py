"""The gauges that stored state gives, reloaded when the server starts.

A restarted server knows no computer's last success until its next session ends, so
without this `time() - backup_computer_last_success_timestamp_seconds > N` would see no
series and `backup_last_session_outcome{outcome="failed"}` would resolve after every
restart. Each policy's computer statuses are read a page at a time (one row per policy
and computer, the same `job.end_time` the live gauge records) with its last final
session of each action; this runs in the background, beside serving, so a 10,000-computer
server starts as fast as an empty one. Live sessions that end meanwhile win: a status
never moves a last success back, and a last session already set live is left alone.
"""

import asyncio
import logging
from typing import Protocol

from backup.errors import BackupError, NotFound
from backup.v1 import resources_pb2 as pb

from .sessions import resolve_targets
from .storage.interface import Storage

log = logging.getLogger("backup_server.monitoring")

PAGE = 1000
# How far back, in sessions of one policy, the last final start and stop are looked for.
SESSIONS_LOOKED_AT = 50
RUNNING = (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING)


class RestoredGauges(Protocol):
    """Where the stored values go (monitoring.ServerMonitoring)."""

    def restore_last_success(self, policy: str, computer: str, ended_ns: int) -> None: ...

    def restore_last_session(self, session: pb.PolicySession) -> None: ...


async def restore_stored_gauges(storage: Storage, gauges: RestoredGauges) -> None:
    """Every policy's last successes and last final sessions, from storage."""
    policies = computers = 0
    after = ""
    try:
        while True:
            page = await storage.list_policies(after, PAGE)
            for policy in page:
                computers += await _policy_gauges(storage, gauges, policy.id)
            policies += len(page)
            if len(page) < PAGE:
                break
            after = page[-1].id
    except BackupError as error:
        # Storage refused (a replica's database away): the next sessions set them again.
        log.warning("stored gauges not reloaded: %s", error.message)
        return
    log.info(
        "gauges reloaded from storage: %d policies, %d computers with a last success",
        policies,
        computers,
    )


async def _policy_gauges(storage: Storage, gauges: RestoredGauges, policy_id: str) -> int:
    try:
        policy, groups = await storage.get_policy_and_groups(policy_id)
    except NotFound:
        return 0  # deleted while we read the list
    # A computer no longer in the policy keeps its stored status but gets no series: it
    # would otherwise be reported without a success for ever.
    names = {target.computer.name for target in resolve_targets(policy, groups)}
    restored = 0
    after = ("", "")
    while True:
        statuses = await storage.list_computer_statuses(policy_id, after, PAGE)
        for status in statuses:
            if status.HasField("last_success_time") and status.computer.name in names:
                ended_ns = status.last_success_time.ToNanoseconds()
                gauges.restore_last_success(policy_id, status.computer.name, ended_ns)
                restored += 1
        if len(statuses) < PAGE:
            break
        after = (policy_id, statuses[-1].computer.address)
        await asyncio.sleep(0)  # a large policy leaves the loop to the sessions between pages
    found: set[int] = set()
    for _, session in await storage.list_sessions(policy_id, 0, SESSIONS_LOOKED_AT, False):
        if session.outcome in RUNNING or session.action in found:
            continue
        found.add(session.action)
        gauges.restore_last_session(session)
    return restored
