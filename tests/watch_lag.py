"""How far WatchSession on one replica lags the computers another replica delivers, used by
tests/test_replicas_watch_lag.py and the bench's replicas section.

A computer's lag is the seconds from its job's start on the agent (the job's start_time,
set as the agent answers StartJob; agents and servers share one clock here) to the first
snapshot the watcher receives that shows it delivered. Only computers whose job began after
the watch's first snapshot count: an earlier one was seen at once, not waited for.
"""

import statistics
import time

import psycopg

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

Seen = list[tuple[float, pb.PolicySession]]


async def watched(service: api_grpc.PolicyServiceStub, session_id: str) -> Seen:
    """Each snapshot WatchSession streams until the delivery ends, with its arrival time."""
    seen: Seen = []
    call = service.WatchSession(api.WatchSessionRequest(session_id=session_id), timeout=120)
    try:
        async for snapshot in call:
            seen.append((time.time(), snapshot))
            if snapshot.state != pb.SESSION_STATE_RUNNING:
                break
    finally:
        # At once: a call left to the garbage collector goes on streaming (a full read of
        # the session every 0.25 s while its jobs are followed) into the next session.
        call.cancel()
    return seen


def row_lags(seen: Seen, positions: list[int]) -> list[float]:
    """The lag of each of `positions` that the watch saw change (see the module docstring)."""
    lags = []
    for position in positions:
        for arrived, snapshot in seen:
            result = snapshot.computer_results[position]
            if result.delivery != pb.DELIVERY_PENDING:
                began = result.job.start_time.ToNanoseconds() / 1e9
                if result.job.id and began > seen[0][0]:
                    lags.append(arrived - began)
                break
    return lags


def end_lag(seen: Seen) -> float:
    """Seconds from the last job's start (any share) to the snapshot with the delivery ended."""
    last = seen[-1][1]
    began = max(r.job.start_time.ToNanoseconds() for r in last.computer_results) / 1e9
    return seen[-1][0] - began


async def replica_ids(url: str) -> dict[str, str]:
    """The live replicas' ids by the address each serves on."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select address, id from replicas where expires_ns > %s", [time.time_ns()]
        )
        return {str(address): str(id_) for address, id_ in await cursor.fetchall()}


async def share_of(url: str, session_id: str, replica_id: str) -> list[int]:
    """The positions of the session's computers in `replica_id`'s share."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select r.position from computer_results r join sessions s on s.seq = r.session_seq"
            " where s.id = %s and r.share = %s order by r.position",
            [session_id, replica_id],
        )
        return [int(row[0]) for row in await cursor.fetchall()]


def spread(values: list[float]) -> str:
    """Median, the 90th percentile and the largest, in seconds, with how many."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"median {statistics.median(ordered):.3f} s, p90 {p90:.3f} s,"
        f" max {ordered[-1]:.3f} s of {len(ordered)}"
    )
