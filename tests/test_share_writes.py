"""A sharing replica's writes of its share's rows (`shares.Shares` over a real PostgreSQL,
agents answering through a counting transport)."""

import asyncio
from typing import Any

from storage_conformance import a_policy, a_session

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb
from backup_server.shares import Shares
from backup_server.storage.postgres import PostgresStorage

COMPUTERS = 10
EARLY = 5  # these answer at once, the others after LATE_ANSWER
# Wide apart, so that a loaded machine's late loop cannot fold the periodic write (every
# 0.25 s) into the last one: the first write is due well before the late answers come.
LATE_ANSWER = 1.0
SLOW_WRITE = 1.5


class SlowFirstShareWrite:
    """The storage, whose first write of a share's rows takes SLOW_WRITE longer (a loaded
    PostgreSQL); with `claimed_meanwhile`, another replica claims the rows of that write
    while it waits (this one's lease lapsed)."""

    def __init__(self, storage: PostgresStorage, claimed_meanwhile: bool = False) -> None:
        self._storage = storage
        self._claimed_meanwhile = claimed_meanwhile
        self.share_writes = 0

    async def save_share(self, session_id: str, changes: Any, share: str = "") -> float:
        self.share_writes += 1
        if self.share_writes == 1:
            await asyncio.sleep(SLOW_WRITE)
            if self._claimed_meanwhile:
                positions = [change.position for change in changes]
                await self._storage.assign_shares(session_id, {"r-other": positions})
        return await self._storage.save_share(session_id, changes, share)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class CountingAgents:
    """Answers StartJob with a running job; counts the commands each address got."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        self.calls[address] = self.calls.get(address, 0) + 1
        if int(address.rsplit(":", 1)[1]) - 1000 >= EARLY:
            await asyncio.sleep(LATE_ANSWER)
        job = pb.Job(id=f"job-{address}", policy_id="p", state=pb.JOB_STATE_RUNNING)
        return agent_pb.StartJobResponse(job=job).SerializeToString()

    async def close(self) -> None:
        pass

    async def warm(self, addresses: object, connect_seconds: float) -> int:
        return 0


async def share_sent(
    postgres_url: str, claimed_meanwhile: bool
) -> tuple[SlowFirstShareWrite, CountingAgents, list[int], pb.PolicySession, dict]:
    """Replica r-me sends its share of COMPUTERS computers (its first periodic write slow)
    until no row is pending or a few seconds pass, then a second more; what it wrote,
    commanded and handed over to be followed, the session as stored, and the positions
    still pending by share."""
    storage = await PostgresStorage.open(postgres_url, 4)
    slow = SlowFirstShareWrite(storage, claimed_meanwhile)
    agents = CountingAgents()
    shares = Shares(slow, agents, 5.0, 100, "r-me", 30.0)  # type: ignore[arg-type]
    followed: list[int] = []
    shares.on_delivered = lambda live, positions: followed.extend(positions)
    try:
        await storage.renew_lease("r-me", "127.0.0.1:1", 30)
        await storage.insert_policy(a_policy("p"), lambda policy, groups: None)
        session = a_session("s", computers=COMPUTERS)
        session.outcome = pb.SESSION_STATE_RUNNING  # its jobs are to be followed
        await storage.insert_session(session, owner="r-owner")
        await storage.assign_shares("s", {"r-me": list(range(COMPUTERS))})
        shares.start()
        for _ in range(40):
            await asyncio.sleep(0.1)
            stored = await storage.get_session("s")
            if all(r.delivery != pb.DELIVERY_PENDING for r in stored.computer_results):
                break
        await asyncio.sleep(1.0)  # several more polls of the share
        pending = await storage.pending_shares("s")
        return slow, agents, followed, await storage.get_session("s"), pending
    finally:
        await shares.stop()
        await storage.close()


async def test_a_share_write_in_flight_as_the_sending_ends_is_waited_for_not_sent_again(
    postgres_url: str,
) -> None:
    """The share's periodic write is slow and still in flight when its last computers answer: the last write waits for it, so every row is stored delivered before the share's poll looks again, and no computer gets its command twice."""
    slow, agents, followed, stored, _ = await share_sent(postgres_url, claimed_meanwhile=False)
    assert slow.share_writes >= 2  # the slow one overlapped the end of the sending
    assert sorted(agents.calls.values()) == [1] * COMPUTERS, agents.calls
    assert {r.delivery for r in stored.computer_results} == {pb.DELIVERY_RECEIVED}
    assert sorted(followed) == list(range(COMPUTERS))


async def test_a_share_write_refused_while_the_sending_ends_stands_the_share_down(
    postgres_url: str,
) -> None:
    """The slow periodic write's rows are claimed by another replica before it commits (this replica's lease lapsed), as the sending ends: the refusal stands the share down although the write's caller was cancelled meanwhile, so this replica hands none of the claimed rows over to be followed, and writes none of them."""
    slow, _, followed, _, pending = await share_sent(postgres_url, claimed_meanwhile=True)
    claimed = pending.get("r-other", [])
    assert len(claimed) >= 1 and slow.share_writes >= 2  # written by nobody: still pending
    assert not set(followed) & set(claimed), (followed, claimed)
