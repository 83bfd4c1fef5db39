"""Replica rows of the PostgreSQL backend: leases, claims of dead replicas' sessions (those
still delivering and those whose jobs are followed), the scheduler's leadership lock, and
failing what no live replica owns.

Every claim is `for update skip locked`, so replicas sweeping at once take different rows
and never one twice.
"""

import time

from psycopg_pool import AsyncConnectionPool

from backup.v1 import resources_pb2 as pb

from . import postgres_statements as statements
from . import rows
from .interface import OUTCOME_UNKNOWN
from .postgres_pool import OwnConnection, PostgresPool

# The advisory lock whose holder is the deployment's one scheduler.
LEADERSHIP_LOCK = 0x6261636B7570_02  # "backup" + 2


class ReplicaRows(PostgresPool):
    """The replicas' side of the storage: leases, claims and the leadership lock."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        super().__init__(pool, url)
        # The leadership lock lives on a connection of its own, outside the pool: the
        # lock is the connection's, released by PostgreSQL when the connection is lost.
        self._leader = OwnConnection(url)
        self._leading_on = 0  # the leader connection (its `opened`) that holds the lock
        # The lease is renewed on another: a pool busy with slow statements (every
        # connection taken, callers waiting up to CONNECTION_WAIT_SECONDS) must not keep
        # a live replica's lease from being renewed.
        self._lease = OwnConnection(url)

    async def close(self) -> None:
        await self._leader.close()
        await self._lease.close()
        await super().close()

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
        """On the lease's own connection (see __init__)."""
        await self._lease.fetch(
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
        if self._leading_on and self._leading_on == self._leader.opened:
            await self._leader.fetch("select 1", [])  # still connected, so still held
            if self._leading_on == self._leader.opened:
                return True
        [(taken,)] = await self._leader.fetch("select pg_try_advisory_lock(%s)", [LEADERSHIP_LOCK])
        self._leading_on = self._leader.opened if taken else 0
        return bool(taken)

    async def claim_followed_sessions(self, replica_id: str) -> list[pb.PolicySession]:
        """`skip locked` as in `claim_sessions`: a session another replica is claiming
        now is left to it, so no two live replicas follow one session."""
        async with self._unit() as cur:
            await cur.execute(
                "update sessions set owner = %s where seq in (select seq from sessions"
                " where outcome = %s and state <> %s and owner is distinct from %s"
                " and owner not in (select id from replicas where expires_ns > %s)"
                " order by seq for update skip locked) returning seq",
                [
                    replica_id,
                    pb.SESSION_STATE_RUNNING,
                    pb.SESSION_STATE_RUNNING,
                    replica_id,
                    time.time_ns(),
                ],
            )
            claimed = [row["seq"] for row in await cur.fetchall()]
            if not claimed:
                return []
            await cur.execute("select * from sessions where seq = any(%s) order by seq", [claimed])
            found = await cur.fetchall()
            return [await statements.session_from_row(cur, row, with_results=True) for row in found]
