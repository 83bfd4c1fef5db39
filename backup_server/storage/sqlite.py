"""The SQLite backend: `SqliteStorage`, the `Storage` over one SQLite file on one thread.

Every call is queued to a single storage thread, where `sqlite_file.SqliteFile` runs its
statements, so SQLite never blocks the event loop and there is one writer; on that thread
`sqlite3.Error` becomes the project's error (a full disk `ResourceExhausted`).
"""

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from backup.errors import BackupError, LocalFault, ResourceExhausted
from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction
from ..sessions import JobEnd, Progress, ResultChange, StoredOutcome
from .interface import GroupChange, PolicyChange, PolicyCheck
from .sqlite_file import SqliteFile

log = logging.getLogger("backup_server.storage")

DISK_FULL_CODES = frozenset({sqlite3.SQLITE_FULL})
# A full disk fails every write until someone frees space: one log line per this long.
LOG_EVERY_SECONDS = 10.0

P = ParamSpec("P")
T = TypeVar("T")


def storage_error(error: sqlite3.Error) -> LocalFault | ResourceExhausted:
    """The project's error for a failure of the database, in one line for the client."""
    code = getattr(error, "sqlite_errorcode", None)
    if code in DISK_FULL_CODES or "disk is full" in str(error):
        return ResourceExhausted("the server's database disk is full; nothing was stored")
    return LocalFault(f"the server's database failed ({error}); nothing was stored")


class SqliteStorage:
    """The `Storage` over one SQLite file; every call is queued to one storage thread."""

    def __init__(self, file: SqliteFile, thread: ThreadPoolExecutor) -> None:
        self.file = file
        self._thread = thread
        self._logged: dict[str, float] = {}

    @classmethod
    async def open(cls, path: str | Path) -> "SqliteStorage":
        """Opens (creating and migrating) the file; OSError or LocalFault if it cannot."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        try:
            file = await asyncio.get_running_loop().run_in_executor(thread, SqliteFile, path)
        except sqlite3.Error as error:
            thread.shutdown()
            raise storage_error(error) from None
        except BaseException:
            thread.shutdown()
            raise
        return cls(file, thread)

    async def _run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`call` on the storage thread, its sqlite3.Error turned into the project's."""
        return (await self._run_timed(call, *args, **kwargs))[0]

    async def _run_timed(
        self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, float]:
        """Like `_run`, plus the seconds the call itself took on the storage thread."""

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            try:
                result = call(*args, **kwargs)
            except sqlite3.Error as error:
                # Translated here, on the storage thread, so no driver frame or
                # traceback travels further than this line of log.
                translated = storage_error(error)
                self._log_failure(translated, error)
                raise translated from None
            return result, time.perf_counter() - started

        return await asyncio.get_running_loop().run_in_executor(self._thread, timed)

    def _log_failure(self, translated: BackupError, error: sqlite3.Error) -> None:
        now = time.monotonic()
        if now - self._logged.get(translated.message, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[translated.message] = now
            log.error("storage: %s (%s)", translated.message, error)

    async def close(self) -> None:
        await self._run(self.file.close)
        self._thread.shutdown()

    async def insert_group(self, group: pb.ProtectionGroup) -> None:
        await self._run(self.file.insert_group, group)

    async def get_group(self, group_id: str) -> pb.ProtectionGroup:
        return await self._run(self.file.get_group, group_id)

    async def list_groups(self, after_id: str, limit: int) -> list[pb.ProtectionGroup]:
        return await self._run(self.file.list_groups, after_id, limit)

    async def update_group(
        self, group_id: str, change: GroupChange, check: PolicyCheck
    ) -> pb.ProtectionGroup:
        return await self._run(self.file.update_group, group_id, change, check)

    async def delete_group(self, group_id: str) -> None:
        await self._run(self.file.delete_group, group_id)

    async def insert_policy(self, policy: pb.BackupPolicy, check: PolicyCheck) -> None:
        await self._run(self.file.insert_policy, policy, check)

    async def update_policy(
        self, policy_id: str, change: PolicyChange, check: PolicyCheck
    ) -> pb.BackupPolicy:
        return await self._run(self.file.update_policy, policy_id, change, check)

    async def get_policy(self, policy_id: str) -> pb.BackupPolicy:
        return await self._run(self.file.get_policy, policy_id)

    async def get_policy_and_groups(
        self, policy_id: str
    ) -> tuple[pb.BackupPolicy, dict[str, pb.ProtectionGroup]]:
        return await self._run(self.file.get_policy_and_groups, policy_id)

    async def list_policies(self, after_id: str, limit: int) -> list[pb.BackupPolicy]:
        return await self._run(self.file.list_policies, after_id, limit)

    async def delete_policy(self, policy_id: str) -> None:
        await self._run(self.file.delete_policy, policy_id)

    async def policy_exists_or_had_sessions(self, policy_id: str) -> bool:
        return await self._run(self.file.policy_exists_or_had_sessions, policy_id)

    async def insert_session(self, session: pb.PolicySession, owner: str = "") -> float:
        return (await self._run_timed(self.file.insert_session, session, owner))[1]

    async def save_progress(self, progress: Progress, owner: str = "") -> float:
        # One server per file, no leases: nothing to fence, `owner` is not checked.
        return (await self._run_timed(self.file.save_progress, progress))[1]

    async def get_session(self, session_id: str) -> pb.PolicySession:
        return await self._run(self.file.get_session, session_id)

    async def get_session_header(self, session_id: str) -> pb.PolicySession:
        return await self._run(self.file.get_session_header, session_id)

    async def list_sessions(
        self, policy_id: str, before: int, limit: int, with_results: bool
    ) -> list[tuple[int, pb.PolicySession]]:
        return await self._run(self.file.list_sessions, policy_id, before, limit, with_results)

    async def last_session_start(self, policy_id: str, trigger: pb.SessionTrigger) -> int | None:
        return await self._run(self.file.last_session_start, policy_id, trigger)

    async def fail_interrupted_sessions(self, replica_id: str = "") -> list[str]:
        return await self._run(self.file.fail_interrupted_sessions, replica_id)

    async def claim_sessions(self, replica_id: str) -> list[str]:
        return []  # one server per file: what a stopped one left is failed at start-up

    async def claim_followed_sessions(self, replica_id: str) -> list[pb.PolicySession]:
        return await self._run(self.file.claim_followed_sessions, replica_id)

    async def renew_lease(self, replica_id: str, address: str, lease_seconds: float) -> None:
        await self._run(self.file.renew_lease, replica_id, address, lease_seconds)

    async def end_lease(self, replica_id: str) -> None:
        await self._run(self.file.end_lease, replica_id)

    async def live_replicas(self) -> list[str]:
        return await self._run(self.file.live_replicas)

    async def hold_leadership(self) -> bool:
        return True  # one server per file

    async def list_followed_sessions(self) -> list[pb.PolicySession]:
        return await self._run(self.file.list_followed_sessions)

    async def list_computer_statuses(
        self, policy_id: str, after: tuple[str, str], limit: int
    ) -> list[pb.ComputerStatus]:
        return await self._run(self.file.list_computer_statuses, policy_id, after, limit)

    # Computer shares: one server per file, so every computer is the caller's.

    async def share_members(self, replica_id: str) -> list[str]:
        return [replica_id]

    async def assign_shares(self, session_id: str, shares: Mapping[str, Sequence[int]]) -> None:
        await self._run(self.file.assign_shares, session_id, shares)

    async def pending_shares(self, session_id: str) -> dict[str, list[int]]:
        return await self._run(self.file.pending_shares, session_id)

    async def assigned_shares(self, replica_id: str) -> dict[str, list[int]]:
        return await self._run(self.file.assigned_shares, replica_id)

    async def claim_shares(self, replica_id: str) -> dict[str, list[int]]:
        return {}  # one server per file: no other replica's share to take over

    async def save_share(
        self, session_id: str, changes: Sequence[ResultChange], share: str = ""
    ) -> float:
        return (await self._run_timed(self.file.save_share, session_id, changes))[1]

    async def delivered_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[ResultChange]:
        return await self._run(self.file.delivered_results, session_id, positions)

    async def header_and_delivered(
        self, session_id: str, positions: Sequence[int]
    ) -> tuple[pb.PolicySession, list[ResultChange]]:
        return await self._run(self.file.header_and_delivered, session_id, positions)

    # Followed shares: one server per file, so no computer is another replica's.

    async def shared_positions(self, session_id: str) -> list[int]:
        return await self._run(self.file.shared_positions, session_id)

    async def followed_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[tuple[ResultChange, bool]]:
        return await self._run(self.file.followed_results, session_id, positions)

    async def save_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> float:
        call = self.file.save_followed
        return (await self._run_timed(call, session_id, changes, job_ends, done))[1]

    async def correct_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> Correction | None:
        return await self._run(self.file.correct_followed, session_id, changes, job_ends, done)

    async def save_shared_progress(
        self, progress: Progress, owner: str = ""
    ) -> tuple[Correction | None, StoredOutcome]:
        return await self._run(self.file.save_shared_progress, progress)

    async def claim_followed_shares(self, replica_id: str) -> dict[str, list[int]]:
        return {}  # one server per file: no other replica's followed share to take over

    async def pending_earlier_starts(self, session_id: str) -> list[tuple[str, int, str]]:
        return await self._run(self.file.pending_earlier_starts, session_id)


__all__ = ["SqliteFile", "SqliteStorage", "storage_error"]
