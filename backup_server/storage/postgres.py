"""The PostgreSQL backend: `PostgresStorage`, the `Storage` over a pool of psycopg connections.

Several server replicas share one database. Each method is one unit of work on a pooled
connection (`postgres_pool.py`); the checks that must see a consistent state take row
locks (`for share` on the groups a policy names, `for update` on a group being deleted or
a policy being changed), so a check and its write commit together against any other
replica. Leases, claims and leadership are `postgres_replicas.py`.
"""

import time

from psycopg import sql

from backup.errors import (
    AlreadyExists,
    FailedPrecondition,
    Fenced,
    NotFound,
)
from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction
from ..sessions import Progress, StoredOutcome
from . import postgres_statements as statements
from . import rows
from .interface import GroupChange, PolicyChange, PolicyCheck
from .postgres_follows import FollowRows
from .postgres_pool import DEFAULT_POOL_SIZE, is_postgres_url, storage_error
from .postgres_replicas import ReplicaRows
from .postgres_shares import ShareRows
from .rows import RESULT_COLUMNS

__all__ = ["DEFAULT_POOL_SIZE", "PostgresStorage", "is_postgres_url", "storage_error"]


class PostgresStorage(ReplicaRows, ShareRows, FollowRows):
    """The `Storage` over one PostgreSQL database, shared by every replica."""

    # Protection groups

    async def insert_group(self, group: pb.ProtectionGroup) -> None:
        async with self._unit() as cur:
            await statements.insert(
                cur, "protection_groups", rows.group_row(group), f"protection group {group.id!r}"
            )

    async def get_group(self, group_id: str) -> pb.ProtectionGroup:
        async with self._unit() as cur:
            return await statements.get_group(cur, group_id)

    async def list_groups(self, after_id: str, limit: int) -> list[pb.ProtectionGroup]:
        async with self._unit() as cur:
            await cur.execute(
                "select body from protection_groups where id > %s order by id limit %s",
                [after_id, limit],
            )
            return [pb.ProtectionGroup.FromString(row["body"]) for row in await cur.fetchall()]

    async def update_group(
        self, group_id: str, change: GroupChange, check: PolicyCheck
    ) -> pb.ProtectionGroup:
        async with self._unit() as cur:
            group = change(await statements.get_group(cur, group_id, lock="for update"))
            await statements.check_group_users(cur, group, check)
            await cur.execute(
                "update protection_groups set name = %s, kind = %s, body = %s where id = %s",
                [group.name, group.kind, group.SerializeToString(), group_id],
            )
            return group

    async def delete_group(self, group_id: str) -> None:
        async with self._unit() as cur:
            # Locked first: a policy naming it waits for this unit of work, or this one
            # for the policy's, and then sees it (see _get_groups).
            await statements.get_group(cur, group_id, lock="for update")
            await cur.execute(
                "select policy_id from policy_groups where group_id = %s"
                " order by policy_id limit 5",
                [group_id],
            )
            users = [row["policy_id"] for row in await cur.fetchall()]
            if users:
                raise FailedPrecondition(
                    f"protection group {group_id!r} is used by policies {', '.join(users)}; "
                    "remove it from them first"
                )
            await cur.execute("delete from protection_groups where id = %s", [group_id])

    # Policies

    async def insert_policy(self, policy: pb.BackupPolicy, check: PolicyCheck) -> None:
        async with self._unit() as cur:
            check(policy, await statements.get_groups(cur, policy.protection_group_ids))
            await statements.insert(
                cur, "policies", rows.policy_row(policy), f"policy {policy.id!r}"
            )
            await statements.write_policy_groups(cur, policy)

    async def update_policy(
        self, policy_id: str, change: PolicyChange, check: PolicyCheck
    ) -> pb.BackupPolicy:
        async with self._unit() as cur:
            policy = change(await statements.get_policy(cur, policy_id, lock="for update"))
            check(policy, await statements.get_groups(cur, policy.protection_group_ids))
            row = rows.policy_row(policy)
            await cur.execute(
                "update policies set name = %s, body = %s, create_ns = %s, update_ns = %s"
                " where id = %s",
                [row["name"], row["body"], row["create_ns"], row["update_ns"], policy_id],
            )
            await statements.write_policy_groups(cur, policy)
            return policy

    async def get_policy(self, policy_id: str) -> pb.BackupPolicy:
        async with self._unit() as cur:
            return await statements.get_policy(cur, policy_id)

    async def get_policy_and_groups(
        self, policy_id: str
    ) -> tuple[pb.BackupPolicy, dict[str, pb.ProtectionGroup]]:
        async with self._unit() as cur:
            policy = await statements.get_policy(cur, policy_id, lock="for share")
            return policy, await statements.get_groups(cur, policy.protection_group_ids)

    async def list_policies(self, after_id: str, limit: int) -> list[pb.BackupPolicy]:
        async with self._unit() as cur:
            await cur.execute(
                "select body from policies where id > %s order by id limit %s", [after_id, limit]
            )
            return [pb.BackupPolicy.FromString(row["body"]) for row in await cur.fetchall()]

    async def delete_policy(self, policy_id: str) -> None:
        async with self._unit() as cur:
            await cur.execute("delete from policies where id = %s", [policy_id])
            if cur.rowcount == 0:
                raise NotFound(f"policy {policy_id!r} not found")
            await cur.execute("delete from policy_groups where policy_id = %s", [policy_id])

    async def policy_exists_or_had_sessions(self, policy_id: str) -> bool:
        async with self._unit() as cur:
            await cur.execute(
                "select exists(select 1 from policies where id = %s)"
                " or exists(select 1 from sessions where policy_id = %s) as known",
                [policy_id, policy_id],
            )
            row = await cur.fetchone()
            return bool(row and row["known"])

    # Sessions

    async def insert_session(self, session: pb.PolicySession, owner: str = "") -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            row = rows.session_row(session, owner)
            # One round trip: no savepoint (a taken id ends the unit of work anyway) and
            # the row number returned rather than looked up.
            await cur.execute(
                sql.SQL(
                    "insert into sessions ({}) values ({}) on conflict (id) do nothing"
                    " returning seq"
                ).format(
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )
            inserted = await cur.fetchone()
            if inserted is None:
                raise AlreadyExists(f"session {session.id!r} already exists")
            seq = int(inserted["seq"])
            # COPY: a 10,000-computer session is one round trip, not 10,000 inserts.
            async with cur.copy(
                f"copy computer_results (session_seq, position, {RESULT_COLUMNS}) from stdin"
            ) as copy:
                for result in rows.result_rows(session):
                    await copy.write_row((seq, *result))
        return time.perf_counter() - started

    async def save_progress(self, progress: Progress, owner: str = "") -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            seq = await self._seq(cur, progress.session_id)
            await self._write_progress(cur, seq, progress, owner)
        return time.perf_counter() - started

    @staticmethod
    async def _write_progress(
        cur: statements.Cursor, seq: int, progress: Progress, owner: str = ""
    ) -> None:
        # The header first, on the owner's condition: its row lock orders this write
        # against a claim of the session (`claim_sessions` updates the same row), so
        # either the write commits before the claim, or it finds the new owner and
        # the transaction is rolled back with nothing of it written.
        header = rows.progress_header(progress)
        fence = sql.SQL(" and owner = %s" if owner else "")
        await cur.execute(
            sql.SQL("update sessions set {} where seq = %s{}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(name)) for name in header
                ),
                fence,
            ),
            [*header.values(), seq, *([owner] if owner else [])],
        )
        if owner and cur.rowcount == 0:
            raise Fenced(
                f"another replica owns session {progress.session_id!r} now: the lease of"
                f" replica {owner} lapsed and the session was claimed"
            )
        await statements.save_results(cur, seq, progress.results)
        await statements.apply_job_ends(cur, progress.job_ends)

    async def save_shared_progress(
        self, progress: Progress, owner: str = ""
    ) -> tuple[Correction | None, StoredOutcome]:
        async with self._unit() as cur:
            stored = await statements.locked_session(cur, progress.session_id)
            seq = int(stored["seq"])
            await self._write_progress(cur, seq, progress, owner)
            before = rows.outcome_seen(rows.session_from_row(stored), progress)
            correction = None
            if before is not None:
                correction = await statements.recount_outcome(cur, seq, before)
            return rows.outcome_stored(progress, before, correction)

    async def get_session(self, session_id: str, with_results: bool = True) -> pb.PolicySession:
        async with self._unit() as cur:
            await cur.execute("select * from sessions where id = %s", [session_id])
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"session {session_id!r} not found")
            return await statements.session_from_row(cur, row, with_results)

    async def get_session_header(self, session_id: str) -> pb.PolicySession:
        return await self.get_session(session_id, with_results=False)

    async def list_sessions(
        self, policy_id: str, before: int, limit: int, with_results: bool
    ) -> list[tuple[int, pb.PolicySession]]:
        """Newest first, those older than `before` (0 = from the newest); the cursor is
        the row's sequence number."""
        where = ["seq < %s"] if before else []
        params: list[object] = [before] if before else []
        if policy_id:
            where.append("policy_id = %s")
            params.append(policy_id)
        clause = f"where {' and '.join(where)}" if where else ""
        async with self._unit() as cur:
            await cur.execute(
                f"select * from sessions {clause} order by seq desc limit %s",
                [*params, limit],
            )
            found = await cur.fetchall()
            return [
                (int(row["seq"]), await statements.session_from_row(cur, row, with_results))
                for row in found
            ]

    async def last_session_start(self, policy_id: str, trigger: pb.SessionTrigger) -> int | None:
        async with self._unit() as cur:
            await cur.execute(
                "select start_ns from sessions where policy_id = %s and trigger = %s"
                " order by seq desc limit 1",
                [policy_id, trigger],
            )
            row = await cur.fetchone()
            return None if row is None else int(row["start_ns"])

    async def list_followed_sessions(self) -> list[pb.PolicySession]:
        async with self._unit() as cur:
            await cur.execute(
                "select * from sessions where outcome = %s order by seq",
                [pb.SESSION_STATE_RUNNING],
            )
            found = await cur.fetchall()
            return [await statements.session_from_row(cur, row, with_results=True) for row in found]

    async def list_computer_statuses(
        self, policy_id: str, after: tuple[str, str], limit: int
    ) -> list[pb.ComputerStatus]:
        async with self._unit() as cur:
            return await statements.list_statuses(cur, policy_id, after, limit)
