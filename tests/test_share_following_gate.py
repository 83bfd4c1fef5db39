"""A sharing replica follows its share's jobs once the session's delivery has ended
(`share_following.FollowedShares` over a real PostgreSQL, agents through a recording
transport): their streams do not compete with the delivery still going on elsewhere."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from storage_conformance import a_policy, a_session

from backup.v1 import resources_pb2 as pb
from backup_server.fanout import AgentCallError
from backup_server.sessions import LiveSession, recount
from backup_server.share_following import FollowedShares
from backup_server.storage.postgres import PostgresStorage

COMPUTERS = 4


class RecordingStreams:
    """Each job's WatchJob stream gives one snapshot, the job ended; when each opened."""

    def __init__(self) -> None:
        self.opened: dict[str, float] = {}

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        raise AgentCallError("UNAVAILABLE", "only WatchJob is expected here")

    async def stream(self, address: str, method: str, request: bytes) -> AsyncIterator[bytes]:
        self.opened.setdefault(address, time.monotonic())
        job = pb.Job(id=f"job-{address}", policy_id="p", state=pb.JOB_STATE_SUCCEEDED)
        yield job.SerializeToString()


async def delivered_share(storage: PostgresStorage) -> LiveSession:
    """Session s of the owner r-owner, all of it replica r-me's share, delivered by r-me
    (each job running) and stored so; its header still says RUNNING."""
    await storage.renew_lease("r-me", "127.0.0.1:1", 30)
    await storage.insert_policy(a_policy("p"), lambda policy, groups: None)
    session = a_session("s", computers=COMPUTERS)
    session.outcome = pb.SESSION_STATE_RUNNING
    await storage.insert_session(session, owner="r-owner")
    await storage.assign_shares("s", {"r-me": list(range(COMPUTERS))})
    live = LiveSession(await storage.get_session("s"))
    for position, result in enumerate(live.session.computer_results):
        job = pb.Job(id=f"job-{result.computer.address}", state=pb.JOB_STATE_RUNNING)
        live.record(position, pb.DELIVERY_RECEIVED, "OK", job_id=job.id, job=job)
    await storage.save_share("s", live.take_progress().results, "r-me")
    return live


async def end_delivery(storage: PostgresStorage) -> None:
    """The owner stores the session's delivery ended, as Control does."""
    owner = LiveSession(await storage.get_session("s"))
    recount(owner.session)
    owner.finish()
    await storage.save_progress(owner.take_progress(), "r-owner")


@contextlib.asynccontextmanager
async def following(
    postgres_url: str, deadline: float, lease: float
) -> AsyncIterator[tuple[PostgresStorage, RecordingStreams, FollowedShares, float]]:
    """Replica r-me following its delivered share (agent deadline and lease as given):
    the storage, the agents' streams, its FollowedShares, and when it was handed the share."""
    storage = await PostgresStorage.open(postgres_url, 4)
    streams = RecordingStreams()
    followed = FollowedShares(storage, streams, deadline, "r-me", lease)
    try:
        live = await delivered_share(storage)
        followed.start()
        sent = time.monotonic()
        followed.follow(live, list(range(COMPUTERS)))
        yield storage, streams, followed, sent
    finally:
        await followed.stop()
        await storage.close()


async def test_a_shares_jobs_are_followed_once_the_sessions_delivery_has_ended(
    postgres_url: str,
) -> None:
    """No stream opens while the stored session is still being delivered (by other replicas); every job's opens within 2 s of the owner storing its end (one 0.25 s poll, loaded machine), and the jobs' ends are stored."""
    async with following(postgres_url, 5.0, 30.0) as (storage, streams, followed, _):
        await asyncio.sleep(1.5)
        assert streams.opened == {}
        assert followed.count == COMPUTERS  # waiting, not dropped
        ended = time.monotonic()
        await end_delivery(storage)
        for _ in range(30):
            await asyncio.sleep(0.1)
            if len(streams.opened) == COMPUTERS:
                break
        assert len(streams.opened) == COMPUTERS
        assert max(streams.opened.values()) - ended < 2.0
        for _ in range(30):
            await asyncio.sleep(0.1)
            stored = await storage.get_session("s")
            if all(r.job.state == pb.JOB_STATE_SUCCEEDED for r in stored.computer_results):
                break
        assert {r.job.state for r in stored.computer_results} == {pb.JOB_STATE_SUCCEEDED}


async def test_a_shares_jobs_are_followed_at_most_a_lease_and_a_deadline_later_anyway(
    postgres_url: str,
) -> None:
    """The owner never stores the end (it died, say): the jobs are followed all the same, a lease and an agent deadline (here 0.5 s and 0.5 s) after the share was sent, not before."""
    async with following(postgres_url, 0.5, 0.5) as (_, streams, _, sent):
        for _ in range(40):
            await asyncio.sleep(0.1)
            if len(streams.opened) == COMPUTERS:
                break
        assert len(streams.opened) == COMPUTERS
        assert 1.0 <= min(streams.opened.values()) - sent < 2.5
