"""Followed shares in PostgreSQL: the replica that sent a computer follows its job.

A computer row's `share` (a replica id; "" for the session's owner) is also who follows
its job after delivery; `follow_done` says that replica is done with it (the job ended
or was lost, the computer's reconciliation settled). The owner reads those rows to
compute the session's outcome; a dead replica's rows not done are claimed `for update
skip locked`, so replicas sweeping at once take different rows and never one twice.
"""

import time
from collections.abc import Sequence

from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction, is_final
from ..sessions import JobEnd, ResultChange
from . import postgres_statements as statements
from . import rows
from .postgres_pool import PostgresPool
from .rows import CHANGE_FIELDS
from .share_rows import by_key, changes_from_rows


class FollowRows(PostgresPool):
    """The followed shares' side of the PostgreSQL storage."""

    async def shared_positions(self, session_id: str) -> list[int]:
        async with self._unit() as cur:
            seq = await statements.seq(cur, session_id)
            await cur.execute(
                "select position from computer_results where session_seq = %s and share <> ''"
                " order by position",
                [seq],
            )
            return [int(row["position"]) for row in await cur.fetchall()]

    async def followed_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[tuple[ResultChange, bool]]:
        async with self._unit() as cur:
            seq = await statements.seq(cur, session_id)
            await cur.execute(
                f"select position, {', '.join(CHANGE_FIELDS)}, follow_done"
                " from computer_results where session_seq = %s and position = any(%s)"
                " order by position",
                [seq, list(positions)],
            )
            found = await cur.fetchall()
        changes = changes_from_rows(
            (row["position"], *(row[name] for name in CHANGE_FIELDS)) for row in found
        )
        return [
            (change, bool(row["follow_done"])) for change, row in zip(changes, found, strict=True)
        ]

    async def save_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            seq = await statements.seq(cur, session_id)
            await self._write_followed(cur, seq, changes, job_ends, done, share)
        return time.perf_counter() - started

    @staticmethod
    async def _write_followed(
        cur: statements.Cursor,
        seq: int,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> None:
        if share and (changes or done):
            # Before any write: the rows' locks order it against a claim of them.
            positions = sorted({change.position for change in changes} | set(done))
            await statements.fence_rows(cur, seq, positions, share)
        await statements.save_results(cur, seq, changes)
        await statements.apply_job_ends(cur, job_ends)
        if done:
            await cur.execute(
                "update computer_results set follow_done = 1"
                " where session_seq = %s and position = any(%s)",
                [seq, list(done)],
            )

    async def correct_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> Correction | None:
        async with self._unit() as cur:
            stored = await statements.locked_session(cur, session_id)
            seq = int(stored["seq"])
            await self._write_followed(cur, seq, changes, job_ends, done, share)
            before = rows.session_from_row(stored)
            if not is_final(before.outcome):
                return None  # its owner's first final write recounts the rows
            return await statements.recount_outcome(cur, seq, before)

    async def claim_followed_shares(self, replica_id: str) -> dict[str, list[int]]:
        async with self._unit() as cur:
            rows_of_dead = "r.delivery <> %s and r.follow_done = 0 and s.outcome = %s"
            params = [pb.DELIVERY_PENDING, pb.SESSION_STATE_RUNNING]
            return by_key(await statements.claim_rows(cur, rows_of_dead, params, replica_id))
