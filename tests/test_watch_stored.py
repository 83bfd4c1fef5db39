"""WatchSession of a session another replica runs, read from the storage (queries.watch with
nothing running here): the snapshots only move forward, the one that says the delivery ended is
built from the rows read since the last one and equals the stored session, and the final one
is the stored session; on SQLite and on PostgreSQL."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

from postgres_support import both_backends as server_db  # noqa: F401 - every test on both
from storage_conformance import a_session

from backup.v1 import resources_pb2 as pb
from backup_server.queries import watch
from backup_server.sessions import LiveSession
from backup_server.storage import Storage
from backup_server.storage.backends import open_storage

from conftest import wait_for

COMPUTERS = 6


def never_back(earlier: pb.PolicySession, later: pb.PolicySession) -> None:
    """No computer delivered in `earlier` is pending (or otherwise changed) in `later`."""
    for before, after in zip(earlier.computer_results, later.computer_results, strict=True):
        if before.delivery != pb.DELIVERY_PENDING:
            assert (after.delivery, after.job_id) == (before.delivery, before.job_id)
    assert later.statistics.pending <= earlier.statistics.pending


async def test_a_watch_from_the_storage_ends_with_the_stored_session(
    server_db: str | Path,  # noqa: F811 - the fixture, by name
) -> None:
    """A session written by its owner (progress) and by a share replica (rows only) is watched from the storage: snapshots never go back, the delivered one equals GetSession's, and the last is the stored session with its outcome."""
    storage: Storage = await open_storage(server_db)
    try:
        await storage.insert_session(a_session("watched", computers=COMPUTERS), owner="r-a")
        session = await storage.get_session("watched")
        session.outcome = pb.SESSION_STATE_RUNNING  # its jobs are followed after delivery
        owner, share = LiveSession(session), LiveSession(await storage.get_session("watched"))
        await storage.save_progress(owner.take_progress())
        seen: list[pb.PolicySession] = []

        async def collect() -> None:
            async for snapshot in watch(storage, {}, "watched"):
                seen.append(snapshot)

        watcher = asyncio.create_task(collect())

        def shown(
            condition: Callable[[pb.PolicySession], bool],
        ) -> Callable[[], Awaitable[bool]]:
            async def met() -> bool:
                return bool(seen) and condition(seen[-1])

            return met

        await wait_for(shown(lambda s: True), seconds=10)
        for position in range(COMPUTERS):
            job = pb.Job(id=f"j{position}", state=pb.JOB_STATE_RUNNING)
            job.start_time.GetCurrentTime()
            if position % 2:  # another replica's share: its row, never the header
                share.record(position, pb.DELIVERY_RECEIVED, "OK: started", 5, job=job)
                await storage.save_share("watched", share.take_progress().results)
                owner.record(position, pb.DELIVERY_RECEIVED, "OK: started", 5, job=job, stored=True)
            else:
                owner.record(position, pb.DELIVERY_RECEIVED, "OK: started", 5, job=job)
            if position < COMPUTERS - 1:
                await storage.save_progress(owner.take_progress())
                await wait_for(shown(lambda s, p=position: s.computer_results[p].job_id != ""), 10)
        owner.session.state = pb.SESSION_STATE_SUCCESS
        owner.session.end_time.GetCurrentTime()
        await storage.save_progress(owner.take_progress())
        await wait_for(shown(lambda s: s.state != pb.SESSION_STATE_RUNNING), seconds=10)
        delivered = seen[-1]
        assert delivered.outcome == pb.SESSION_STATE_RUNNING
        assert delivered == await storage.get_session("watched")
        owner.session.outcome = pb.SESSION_STATE_SUCCESS
        owner.session.outcome_time.GetCurrentTime()
        await storage.save_progress(owner.take_progress())
        await asyncio.wait_for(watcher, 10)
        assert seen[-1] == await storage.get_session("watched")
        assert seen[-1].outcome == pb.SESSION_STATE_SUCCESS
        for earlier, later in itertools.pairwise(seen):
            never_back(earlier, later)
    finally:
        await storage.close()
