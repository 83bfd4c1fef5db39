"""Which deadline each command of a fan-out gets, seen through a recording transport."""

import asyncio
import time

from backup.v1 import resources_pb2 as pb
from backup_server.commands import Command
from backup_server.fanout import AgentCallError, FanOut
from backup_server.sessions import LiveSession, Target, new_session

DEADLINE = 1.0
# What putting one call on the wire costs here, made visible: the loop is blocked this long.
SEND_COST = 0.05


class RecordingTransport:
    """Answers DEADLINE_EXCEEDED at once, after blocking the loop for SEND_COST; keeps deadlines."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        self.deadlines.append(deadline)
        time.sleep(SEND_COST)  # noqa: ASYNC251 - the point is to hold the loop, as sending does
        await asyncio.sleep(0)
        raise AgentCallError("DEADLINE_EXCEEDED", "simulated")

    async def close(self) -> None:
        pass


def fanout_over(count: int, transport: RecordingTransport, limit: int) -> FanOut:
    targets = [
        Target(pb.Computer(name=f"c{index}", address=f"127.0.0.1:{1000 + index}"), "")
        for index in range(count)
    ]
    session = new_session("s-deadline", "nightly", pb.SESSION_ACTION_START, targets)
    return FanOut(
        LiveSession(session),
        transport,
        Command("StartJob", b"", lambda _: ("", "")),
        DEADLINE,
        limit,
    )


async def test_first_wave_shares_one_deadline_from_when_sending_began() -> None:
    """Commands sent at once all end one deadline after sending began, not each a deadline later."""
    transport = RecordingTransport()
    await fanout_over(5, transport, limit=10).run()
    first, *later = transport.deadlines
    assert DEADLINE - SEND_COST < first <= DEADLINE
    assert later[-1] <= DEADLINE - 4 * SEND_COST + 0.01
    assert transport.deadlines == sorted(transport.deadlines, reverse=True)


async def test_first_wave_never_gets_less_than_half_a_deadline() -> None:
    """However long sending takes, no command of the first wave gets under half the deadline."""
    transport = RecordingTransport()
    await fanout_over(15, transport, limit=15).run()
    assert min(transport.deadlines) == DEADLINE / 2


async def test_command_queued_behind_the_limit_gets_a_whole_deadline() -> None:
    """A command that waited for a free slot gets the full deadline when it leaves the queue."""
    transport = RecordingTransport()
    await fanout_over(3, transport, limit=1).run()
    assert transport.deadlines[0] <= DEADLINE
    assert transport.deadlines[1:] == [DEADLINE, DEADLINE]
