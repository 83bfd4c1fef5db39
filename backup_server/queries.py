"""Answers about sessions, running or stored: get, list (paged) and watch.

A session running on this replica is read from memory; one running on another replica
(they share a PostgreSQL database) is followed in the storage, polled often enough that a
watcher here lags the replica running it by at most a second.
"""

import asyncio
import time
from collections.abc import AsyncIterator

from backup import paging, validation
from backup.errors import NotFound
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from .running import RunningSessions
from .sessions import LiveSession
from .storage.interface import Storage

LIST_DEFAULT = 50
LIST_LIMIT = 1000
LIST_LIMIT_FULL = 10
# The running replica writes progress every 0.25 s, and so does a replica sending a share.
# While the delivery runs, a watcher on another replica polls the header and the computers
# newly delivered (a row changes only from pending then), cheap enough to do every 0.1 s:
# it lags a computer's row by at most 0.25 + 0.1 s and one round trip (both read at
# once), inside the 1 s rule.
# Then (the jobs followed) it reads the whole session every 0.25 s.
DELIVERY_POLL_SECONDS = 0.1
STORED_POLL_SECONDS = 0.25


class SessionQueries:
    """Reads a running session from memory and any other from the storage."""

    def __init__(self, storage: Storage, running: RunningSessions) -> None:
        self._storage = storage
        self._running = running
        self._live = running.live

    async def get_session(self, session_id: str) -> pb.PolicySession:
        validation.require_id("session_id", session_id)
        live = self._live.get(session_id)
        if live is not None:
            return live.snapshot()
        return await self._storage.get_session(session_id)

    async def list_sessions(
        self, policy_id: str, page_size: int, page_token: str, view: api.SessionView
    ) -> tuple[list[pb.PolicySession], str]:
        if validation.optional_id("policy_id", policy_id):
            if not await self._storage.policy_exists_or_had_sessions(policy_id):
                raise NotFound(f"policy {policy_id!r} not found")
        full = view == api.SESSION_VIEW_FULL
        limit = LIST_LIMIT_FULL if full else LIST_LIMIT
        size = validation.page_size(page_size, min(LIST_DEFAULT, limit), limit)
        query = f"sessions:{policy_id}:{int(full)}"
        before = paging.decode(page_token, query, int) or 0
        held = self._running.held()
        rows = await self._storage.list_sessions(policy_id, before, size + 1, full)
        sessions = [self._latest(session, full, held(session.id)) for _, session in rows[:size]]
        token = paging.encode(query, rows[size - 1][0]) if len(rows) > size else ""
        return sessions, token

    def _latest(
        self, stored: pb.PolicySession, full: bool, live: LiveSession | None
    ) -> pb.PolicySession:
        """A running session as it is in memory now, not as last written."""
        if live is None:
            return stored
        current = live.snapshot()
        if not full:
            del current.computer_results[:]
        return current

    async def watch_session(self, session_id: str) -> AsyncIterator[pb.PolicySession]:
        validation.require_id("session_id", session_id)
        async for snapshot in watch(self._storage, self._live, session_id):
            yield snapshot


async def watch(
    storage: Storage,
    running: dict[str, LiveSession],
    session_id: str,
    delivery_only: bool = False,
) -> AsyncIterator[pb.PolicySession]:
    """Snapshots of a session until it is finished (delivered and its outcome final; with
    `delivery_only`, delivered), the final one last: from memory when it runs here, else
    from the storage (it runs on another replica, or has ended). NotFound if there is no
    such session."""

    def ended(session: pb.PolicySession) -> bool:
        return session.state != pb.SESSION_STATE_RUNNING and (
            delivery_only or session.outcome != pb.SESSION_STATE_RUNNING
        )

    live = running.get(session_id)
    if live is None:
        stored = await storage.get_session(session_id)
        live = running.get(session_id)
        if live is None:
            yield stored
            polled = time.monotonic()
            while not ended(stored):
                delivering = stored.state == pb.SESSION_STATE_RUNNING
                # Counted from the last poll's start, not its end: on a replica whose loop
                # is busy sending its own share, the read and the send of a snapshot take
                # a good part of the interval themselves.
                interval = DELIVERY_POLL_SECONDS if delivering else STORED_POLL_SECONDS
                await asyncio.sleep(max(0.0, polled + interval - time.monotonic()))
                polled = time.monotonic()
                latest = (
                    await _delivered_since(storage, stored, delivery_only)
                    if delivering
                    else await storage.get_session(session_id)
                )
                if latest is not stored and latest != stored:
                    stored = latest
                    yield stored
            return
    while True:
        change = live.next_change()
        if live.stood_down:
            # This replica's record is stale (another replica owns the session now): the
            # watch goes on from the storage, as on any other replica.
            async for stored in watch(storage, running, session_id, delivery_only):
                yield stored
            return
        # The outcome as stored: the last snapshot comes once the final one is stored.
        snapshot = live.snapshot()
        yield snapshot
        if ended(snapshot):
            return
        await change.wait()


async def _delivered_since(
    storage: Storage, stored: pb.PolicySession, final: bool
) -> pb.PolicySession:
    """The session as stored now, read as its header and the rows delivered since `stored`
    (not every row again: 10,000 of them take a while to read, and the watcher's loop
    reads and builds them while its replica sends its own share). The header is read
    first: once it says the delivery ended, every row read after it is delivered, so the
    snapshot that says so is built the same way. Only a final one (`final`: the delivery
    is all the caller waits for; or the outcome final too) is the whole session as
    stored, read again: the jobs' followers may have rewritten delivered rows since."""
    results = stored.computer_results
    pending = [p for p, result in enumerate(results) if result.delivery == pb.DELIVERY_PENDING]
    header, changes = await storage.header_and_delivered(stored.id, pending)
    if header.state != pb.SESSION_STATE_RUNNING and (
        final or header.outcome != pb.SESSION_STATE_RUNNING
    ):
        return await storage.get_session(stored.id)
    if not changes and _header_fields(header) == _header_fields(stored):
        # Nothing new: `stored` itself, not a copy of its 5,000 rows (7 ms) compared with
        # them, on a loop that sends this replica's own share meanwhile.
        return stored
    header.computer_results.extend(results)
    for change in changes:
        result = header.computer_results[change.position]
        result.delivery, result.detail = change.delivery, change.detail
        result.job_id, result.reconciled = change.job_id, change.reconciled
        result.job_unknown = change.job_unknown
        if change.job:
            result.job.ParseFromString(change.job)
        if change.contact_ns:
            result.last_contact_time.FromNanoseconds(change.contact_ns)
        if change.latency_ns:
            result.latency.FromNanoseconds(change.latency_ns)
    return header


def _header_fields(session: pb.PolicySession) -> list[tuple[str, object]]:
    return [(f.name, value) for f, value in session.ListFields() if f.name != "computer_results"]


async def delivered(
    storage: Storage, running: dict[str, LiveSession], session_id: str
) -> pb.PolicySession:
    """The session once its delivery has ended, wherever it runs (its jobs may still be
    followed: what StartPolicy answers)."""
    last = pb.PolicySession()
    async for snapshot in watch(storage, running, session_id, delivery_only=True):
        last = snapshot
    return last
