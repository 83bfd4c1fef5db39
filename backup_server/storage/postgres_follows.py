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

from ..sessions import JobEnd, ResultChange
from . import postgres_statements as statements
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
    ) -> float:
        started = time.perf_counter()
        async with self._unit() as cur:
            seq = await statements.seq(cur, session_id)
            await statements.save_results(cur, seq, changes)
            await statements.apply_job_ends(cur, job_ends)
            if done:
                await cur.execute(
                    "update computer_results set follow_done = 1"
                    " where session_seq = %s and position = any(%s)",
                    [seq, list(done)],
                )
        return time.perf_counter() - started

    async def claim_followed_shares(self, replica_id: str) -> dict[str, list[int]]:
        async with self._unit() as cur:
            await cur.execute(
                "with taken as (select r.session_seq, r.position from computer_results r"
                " join sessions s on s.seq = r.session_seq"
                " where r.delivery <> %s and r.follow_done = 0 and r.share <> ''"
                " and r.share <> %s and s.outcome = %s"
                " and r.share not in (select id from replicas where expires_ns > %s)"
                " for update of r skip locked)"
                " update computer_results as r set share = %s from taken"
                " where r.session_seq = taken.session_seq and r.position = taken.position"
                " returning r.session_seq, r.position",
                [
                    pb.DELIVERY_PENDING,
                    replica_id,
                    pb.SESSION_STATE_RUNNING,
                    time.time_ns(),
                    replica_id,
                ],
            )
            claimed = await cur.fetchall()
            if not claimed:
                return {}
            await cur.execute(
                "select seq, id from sessions where seq = any(%s)",
                [sorted({row["session_seq"] for row in claimed})],
            )
            ids = {row["seq"]: row["id"] for row in await cur.fetchall()}
            return by_key(sorted((ids[row["session_seq"]], row["position"]) for row in claimed))
