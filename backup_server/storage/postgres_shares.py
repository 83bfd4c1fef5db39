"""Computer shares in PostgreSQL: which replica sends each computer of a session.

A share is the `share` column of a computer's row: a replica id, or "" for the session's
owner. Replicas poll the rows assigned to them through a partial index of the pending
rows; a dead replica's pending rows are claimed `for update skip locked`, so replicas
sweeping at once take different rows and never one twice.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import dict_row

from backup.errors import NotFound
from backup.v1 import resources_pb2 as pb

from ..sessions import ResultChange
from . import postgres_statements as statements
from .postgres_pool import PostgresPool
from .rows import CHANGE_FIELDS
from .share_rows import by_key, changes_from_rows, earlier_starts_query


class ShareRows(PostgresPool):
    """The shares' side of the PostgreSQL storage."""

    async def share_members(self, replica_id: str) -> list[str]:
        async with self._unit() as cur:
            await cur.execute(
                "select id from replicas where expires_ns > %s or id = %s order by id",
                [time.time_ns(), replica_id],
            )
            members = [str(row["id"]) for row in await cur.fetchall()]
        return members if replica_id in members else sorted([*members, replica_id])

    async def assign_shares(self, session_id: str, shares: Mapping[str, Sequence[int]]) -> None:
        replicas = [replica for replica, positions in shares.items() for _ in positions]
        positions = [position for batch in shares.values() for position in batch]
        async with self._unit() as cur:
            seq = await self._seq(cur, session_id)
            await cur.execute(
                "update computer_results as r set share = c.share"
                " from unnest(%s::integer[], %s::text[]) as c(position, share)"
                " where r.session_seq = %s and r.position = c.position",
                [positions, replicas, seq],
            )

    async def pending_shares(self, session_id: str) -> dict[str, list[int]]:
        async with self._unit() as cur:
            seq = await self._seq(cur, session_id)
            await cur.execute(
                "select share, position from computer_results where session_seq = %s"
                " and delivery = %s order by position",
                [seq, pb.DELIVERY_PENDING],
            )
            return by_key((row["share"], row["position"]) for row in await cur.fetchall())

    async def assigned_shares(self, replica_id: str) -> dict[str, list[int]]:
        async with self._unit() as cur:
            await cur.execute(
                "select s.id, r.position from computer_results r"
                " join sessions s on s.seq = r.session_seq"
                " where r.share = %s and r.delivery = %s and s.state = %s"
                " order by s.id, r.position",
                [replica_id, pb.DELIVERY_PENDING, pb.SESSION_STATE_RUNNING],
            )
            return by_key((row["id"], row["position"]) for row in await cur.fetchall())

    async def claim_shares(self, replica_id: str) -> dict[str, list[int]]:
        async with self._unit() as cur:
            rows_of_dead = "r.delivery = %s and s.state = %s"
            params = [pb.DELIVERY_PENDING, pb.SESSION_STATE_RUNNING]
            return by_key(await statements.claim_rows(cur, rows_of_dead, params, replica_id))

    async def save_share(
        self, session_id: str, changes: Sequence[ResultChange], share: str = ""
    ) -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            seq = await self._seq(cur, session_id)
            await statements.save_results(cur, seq, changes, share)
        return time.perf_counter() - started

    async def delivered_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[ResultChange]:
        # Outside a transaction: one statement, polled every 0.1 s by a session's owner.
        async with self._read() as conn:
            seq = await self._seq(conn.cursor(row_factory=dict_row), session_id)  # or NotFound
            found = await _delivered(conn.cursor(), seq, positions)
            return changes_from_rows(await found.fetchall())

    async def header_and_delivered(
        self, session_id: str, positions: Sequence[int]
    ) -> tuple[pb.PolicySession, list[ResultChange]]:
        # Both statements in one pipeline: one round trip (and one turn of a busy event
        # loop) where a unit of work each took four. The header's comes first: a row's
        # delivery only ever leaves pending, so rows read after it are as new or newer.
        async with self._read() as conn, conn.pipeline():
            header = conn.cursor(row_factory=dict_row)
            await header.execute("select * from sessions where id = %s", [session_id])
            found = await _delivered(conn.cursor(), session_id, positions)
            row = await header.fetchone()
            changes = changes_from_rows(await found.fetchall())
        if row is None:
            raise NotFound(f"session {session_id!r} not found")
        return await statements.session_from_row(header, row, False), changes

    async def pending_earlier_starts(self, session_id: str) -> list[tuple[str, int, str]]:
        sql, parameters = earlier_starts_query("%s")
        async with self._unit() as cur:
            seq = await statements.seq(cur, session_id)
            await cur.execute(sql, [seq, seq, *parameters])
            found = await cur.fetchall()
        return [(str(row["id"]), int(row["position"]), str(row["address"])) for row in found]


async def _delivered(
    cur: AsyncCursor[tuple[Any, ...]], session: int | str, positions: Sequence[int]
) -> AsyncCursor[tuple[Any, ...]]:
    """`cur`, having selected the rows among `positions` no longer pending of the session
    (its row number, or its id), as (position, *CHANGE_FIELDS) in position order."""
    seq = "%s" if isinstance(session, int) else "(select seq from sessions where id = %s)"
    await cur.execute(
        f"select position, {', '.join(CHANGE_FIELDS)} from computer_results"
        f" where session_seq = {seq} and position = any(%s) and delivery <> %s"
        " order by position",
        [session, list(positions), pb.DELIVERY_PENDING],
    )
    return cur
