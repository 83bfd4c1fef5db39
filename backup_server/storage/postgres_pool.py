"""The connection plumbing of the PostgreSQL backend: the pool, one unit of work, errors.

`PostgresPool` opens (and migrates) the database and hands each storage method a cursor
inside one transaction on a pooled connection; `OwnConnection` is one connection outside
the pool, for what a busy pool must not delay (the lease) or what belongs to one
connection (the leadership lock). A driver error leaves as the project's
error (`storage_error`): a lost or refused connection is `Unavailable`, a full disk
`ResourceExhausted`, anything else `LocalFault`.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backup.errors import BackupError, LocalFault, ResourceExhausted, Unavailable

from . import postgres_statements as statements
from .postgres_migrations import migrate

log = logging.getLogger("backup_server.storage")

DEFAULT_POOL_SIZE = 10
# How long a call waits for a pooled connection (the database down: UNAVAILABLE after it).
CONNECTION_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
LOG_EVERY_SECONDS = 10.0
DISK_FULL = "53100"
# Session ids whose row number is kept (a number never changes: sessions are not deleted).
SEQ_CACHE_SIZE = 4096
# SQLSTATE classes meaning the server is gone or going: connection exception, operator
# intervention (shutdown, restart), and insufficient resources other than a full disk.
UNAVAILABLE_CLASSES = ("08", "57", "53")


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


class OwnConnection:
    """One autocommit connection outside the pool, opened when first needed and again after
    it failed; `opened` counts its connections (what was held on an earlier one is lost)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: AsyncConnection | None = None
        self._guard = asyncio.Lock()
        self.opened = 0

    async def fetch(self, query: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The statement's rows (none for a statement that returns none); a failure drops
        the connection and leaves as the project's error."""
        async with self._guard:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = None
                    self._conn = await AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                    )
                    self.opened += 1
                cursor = await self._conn.execute(query, params)
                return await cursor.fetchall() if cursor.description else []
            except psycopg.Error as error:
                await self.close()
                raise storage_error(error) from None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None


class PostgresPool:
    """A pool of connections to one PostgreSQL database, and units of work on it."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        self.pool = pool
        self._url = url
        self._logged: dict[str, float] = {}
        self._seqs: dict[str, int] = {}

    @classmethod
    async def open(cls, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Self:
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

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit, errors translated: for reads of one
        statement each (or a pipeline of them), which a transaction's BEGIN and COMMIT
        would cost two more round trips."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as error:
            translated = storage_error(error)
            self._log_failure(translated, error)
            raise translated from None

    async def _seq(self, cur: AsyncCursor[dict[str, Any]], session_id: str) -> int:
        """The session's row number (NotFound if there is none), looked up once: a running
        session's every progress write, share write and merge poll would otherwise spend a
        round trip on it."""
        seq = self._seqs.get(session_id)
        if seq is None:
            seq = await statements.seq(cur, session_id)
            if len(self._seqs) >= SEQ_CACHE_SIZE:
                self._seqs.clear()
            self._seqs[session_id] = seq
        return seq

    def _log_failure(self, translated: BackupError, error: Exception) -> None:
        now = time.monotonic()
        if now - self._logged.get(translated.message, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[translated.message] = now
            log.error("storage: %s (%s)", translated.message, type(error).__name__)
