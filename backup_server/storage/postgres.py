"""The PostgreSQL backend: `PostgresStorage`, the `Storage` over a pool of psycopg connections.

Several server replicas share one database. Each method is one unit of work on a pooled
connection; the checks that must see a consistent state take row locks (`for share` on
the groups a policy names, `for update` on a group being deleted or a policy being
changed), so a check and its write commit together against any other replica. A driver
error leaves as the project's error (`storage_error`): a lost or refused connection is
`Unavailable`, a full disk `ResourceExhausted`, anything else `LocalFault`.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backup.errors import (
    BackupError,
    FailedPrecondition,
    LocalFault,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from backup.v1 import resources_pb2 as pb

from ..sessions import Progress
from . import postgres_statements as statements
from . import rows
from .interface import OUTCOME_UNKNOWN, GroupChange, PolicyChange, PolicyCheck
from .postgres_migrations import migrate
from .rows import RESULT_COLUMNS

log = logging.getLogger("backup_server.storage")

DEFAULT_POOL_SIZE = 10
# How long a call waits for a pooled connection (the database down: UNAVAILABLE after it).
CONNECTION_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
LOG_EVERY_SECONDS = 10.0
DISK_FULL = "53100"
# SQLSTATE classes meaning the server is gone or going: connection exception, operator
# intervention (shutdown, restart), and insufficient resources other than a full disk.
UNAVAILABLE_CLASSES = ("08", "57", "53")
# The advisory lock whose holder is the deployment's one scheduler.
LEADERSHIP_LOCK = 0x6261636B7570_02  # "backup" + 2


def is_postgres_url(db: object) -> bool:
    """Whether `--db` names a PostgreSQL database rather than a SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


def storage_error(error: Exception) -> BackupError:
    """The project's error for a failure of the database, in one line for the client."""
    state = getattr(error, "sqlstate", None) or ""
    if state == DISK_FULL:
        return ResourceExhausted("the server's database disk is full; nothing was stored")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if (
        isinstance(error, PoolTimeout | psycopg.InterfaceError)
        or state.startswith(UNAVAILABLE_CLASSES)
        or (isinstance(error, psycopg.OperationalError) and not state)
    ):
        return Unavailable(f"the server's database cannot be reached ({reason}); try again")
    return LocalFault(f"the server's database failed ({reason}); nothing was stored")


class PostgresStorage:
    """The `Storage` over one PostgreSQL database, shared by every replica."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        self.pool = pool
        self._url = url
        self._logged: dict[str, float] = {}
        # The leadership lock lives on a connection of its own, outside the pool: the
        # lock is the connection's, released by PostgreSQL when the connection is lost.
        self._leader: AsyncConnection | None = None
        self._leading = False
        self._leader_guard = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> "PostgresStorage":
        """Connects, migrates (once, whatever other replicas do at the same moment) and
        opens the pool; Unavailable or LocalFault if the database cannot be used."""
        try:
            async with await AsyncConnection.connect(
                url, connect_timeout=CONNECT_TIMEOUT_SECONDS
            ) as conn:
                applied = await migrate(conn)
        except psycopg.Error as error:
            raise storage_error(error) from None
        if applied:
            log.info("database migrated: %s", "; ".join(applied))
        pool: AsyncConnectionPool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            # A connection the database dropped (a restart) is found out before it is
            # handed to a call, and replaced; the pool keeps trying to reconnect.
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=float("inf"),
            timeout=CONNECTION_WAIT_SECONDS,
            open=False,
            name="backup-server",
        )
        await pool.open()
        return cls(pool, url)

    async def close(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(psycopg.Error):
                await self._leader.close()
        await self.pool.close()

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[AsyncCursor[dict[str, Any]]]:
        """A cursor inside one transaction on a pooled connection, errors translated."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                yield conn.cursor(row_factory=dict_row)
        except (psycopg.Error, PoolTimeout) as error:
            translated = storage_error(error)
            self._log_failure(translated, error)
            raise translated from None

    def _log_failure(self, translated: BackupError, error: Exception) -> None:
        now = time.monotonic()
        if now - self._logged.get(translated.message, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[translated.message] = now
            log.error("storage: %s (%s)", translated.message, type(error).__name__)

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
            await statements.insert(cur, "sessions", row, f"session {session.id!r}")
            seq = await statements.seq(cur, session.id)
            # COPY: a 10,000-computer session is one round trip, not 10,000 inserts.
            async with cur.copy(
                f"copy computer_results (session_seq, position, {RESULT_COLUMNS}) from stdin"
            ) as copy:
                for result in rows.result_rows(session):
                    await copy.write_row((seq, *result))
        return time.perf_counter() - started

    async def save_progress(self, progress: Progress) -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            seq = await statements.seq(cur, progress.session_id)
            await statements.save_results(cur, seq, progress.results)
            header = rows.progress_header(progress)
            await cur.execute(
                sql.SQL("update sessions set {} where seq = %s").format(
                    sql.SQL(", ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in header
                    )
                ),
                [*header.values(), seq],
            )
            await statements.apply_job_ends(cur, progress.job_ends)
        return time.perf_counter() - started

    async def get_session(self, session_id: str) -> pb.PolicySession:
        async with self._unit() as cur:
            await cur.execute("select * from sessions where id = %s", [session_id])
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"session {session_id!r} not found")
            return await statements.session_from_row(cur, row, with_results=True)

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

    async def fail_interrupted_sessions(self, replica_id: str = "") -> list[str]:
        """Those whose replica's lease ran out (and never `replica_id`'s); `skip locked`
        lets replicas sweep at once without waiting for each other."""
        async with self._unit() as cur:
            await cur.execute(
                "select seq, id, warnings, start_ns, end_ns from sessions"
                " where state = %s and owner is distinct from nullif(%s, '') and owner not in"
                " (select id from replicas where expires_ns > %s)"
                " order by seq for update skip locked",
                [pb.SESSION_STATE_RUNNING, replica_id, time.time_ns()],
            )
            running = await cur.fetchall()
            for row in running:
                await cur.execute(
                    "update sessions set state = %s, end_ns = %s, warnings = %s where seq = %s",
                    [
                        pb.SESSION_STATE_FAILED,
                        row["end_ns"] or row["start_ns"],
                        rows.interrupted_warnings(row["warnings"]),
                        row["seq"],
                    ],
                )
                await cur.execute(
                    "update computer_results set detail = %s"
                    " where session_seq = %s and delivery = %s",
                    [OUTCOME_UNKNOWN, row["seq"], pb.DELIVERY_PENDING],
                )
        return [row["id"] for row in running]

    async def list_followed_sessions(self) -> list[pb.PolicySession]:
        async with self._unit() as cur:
            await cur.execute(
                "select * from sessions where outcome = %s order by seq",
                [pb.SESSION_STATE_RUNNING],
            )
            found = await cur.fetchall()
            return [
                await statements.session_from_row(cur, row, with_results=True) for row in found
            ]

    async def list_computer_statuses(
        self, policy_id: str, after: tuple[str, str], limit: int
    ) -> list[pb.ComputerStatus]:
        async with self._unit() as cur:
            return await statements.list_statuses(cur, policy_id, after, limit)

    # Replicas

    async def claim_sessions(self, replica_id: str) -> list[str]:
        """`skip locked`: replicas sweeping at once claim different sessions, never one
        twice."""
        async with self._unit() as cur:
            await cur.execute(
                "update sessions set owner = %s where seq in (select seq from sessions"
                " where state = %s and owner is distinct from %s and owner not in"
                " (select id from replicas where expires_ns > %s)"
                " order by seq for update skip locked) returning id",
                [replica_id, pb.SESSION_STATE_RUNNING, replica_id, time.time_ns()],
            )
            return sorted(row["id"] for row in await cur.fetchall())

    async def renew_lease(self, replica_id: str, address: str, lease_seconds: float) -> None:
        async with self._unit() as cur:
            await cur.execute(
                "insert into replicas (id, address, expires_ns) values (%s, %s, %s)"
                " on conflict (id) do update set address = excluded.address,"
                " expires_ns = excluded.expires_ns",
                [replica_id, address, time.time_ns() + int(lease_seconds * 1e9)],
            )

    async def end_lease(self, replica_id: str) -> None:
        async with self._unit() as cur:
            await cur.execute("delete from replicas where id = %s", [replica_id])

    async def live_replicas(self) -> list[str]:
        async with self._unit() as cur:
            await cur.execute(
                "select id from replicas where expires_ns > %s order by id", [time.time_ns()]
            )
            return [row["id"] for row in await cur.fetchall()]

    async def hold_leadership(self) -> bool:
        async with self._leader_guard:
            try:
                if self._leader is None or self._leader.closed:
                    self._leader, self._leading = None, False
                    self._leader = await AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                    )
                if self._leading:
                    await self._leader.execute("select 1")  # still connected, still held
                    return True
                cursor = await self._leader.execute(
                    "select pg_try_advisory_lock(%s)", [LEADERSHIP_LOCK]
                )
                self._leading = bool((await cursor.fetchone() or (False,))[0])
                return self._leading
            except psycopg.Error as error:
                if self._leader is not None:
                    with contextlib.suppress(psycopg.Error):
                        await self._leader.close()
                self._leader, self._leading = None, False
                raise storage_error(error) from None
