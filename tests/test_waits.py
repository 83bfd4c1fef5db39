"""The shared layer's waits with a time limit (backup.waits): a cancellation that lands
while they wait, even at the very moment what they wait for happens, always raises, where
Python 3.11's asyncio.wait_for returns normally and drops it."""

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from backup.waits import finished_within, wait_event

Waiter = Callable[[asyncio.Event], Awaitable[object]]


async def cancelled_as_set(waiter: Waiter, steps: int, set_first: bool) -> bool:
    """Whether a cancel given in the same loop step as the event is set reaches the waiter
    (after `steps` turns of the loop, the event set before or after the cancel)."""
    event = asyncio.Event()
    task = asyncio.ensure_future(waiter(event))
    for _ in range(steps):
        await asyncio.sleep(0)
    if set_first:
        event.set()
        task.cancel()
    else:
        task.cancel()
        event.set()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def slow(ended: list[str]) -> None:
    """Sleeps long; notes in `ended` that it was cancelled."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        ended.append("cancelled")
        raise


INTERLEAVINGS = [(steps, set_first) for steps in range(5) for set_first in (True, False)]


async def test_a_cancel_as_the_event_is_set_is_never_lost() -> None:
    """At every interleaving of a cancel with the event being set, wait_event raises CancelledError."""
    for steps, set_first in INTERLEAVINGS:
        assert await cancelled_as_set(lambda e: wait_event(e, 10), steps, set_first), (
            steps,
            set_first,
        )


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for is asyncio.timeout from 3.12")
async def test_the_same_interleavings_lose_the_cancel_with_asyncio_wait_for() -> None:
    """What the helper replaces: on Python 3.11, asyncio.wait_for(event.wait(), t) drops the cancel in some of those interleavings (so the test above exercises the race)."""

    async def waited_for(event: asyncio.Event) -> bool:
        return await asyncio.wait_for(event.wait(), 10)

    reached = [
        await cancelled_as_set(waited_for, steps, set_first) for steps, set_first in INTERLEAVINGS
    ]
    assert not all(reached)


async def test_wait_event_says_whether_the_event_was_set_in_time() -> None:
    """True at once for a set event, True when it is set within the limit, False after the limit, and no task left behind."""
    event = asyncio.Event()
    before = len(asyncio.all_tasks())
    assert not await wait_event(event, 0.05)
    asyncio.get_running_loop().call_later(0.05, event.set)
    assert await wait_event(event, 5)
    assert await wait_event(event, 0)
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_finished_within_cancels_what_outlives_its_limit_and_raises_what_failed() -> None:
    """An awaitable past the limit is cancelled and waited for (False); one that fails raises its error; one that ends in time is True."""
    ended: list[str] = []
    async def failing() -> None:
        raise ValueError("broken")

    assert not await finished_within(slow(ended), 0.05)
    assert ended == ["cancelled"]
    with pytest.raises(ValueError, match="broken"):
        await finished_within(failing(), 1)
    assert await finished_within(asyncio.sleep(0.01), 1)


async def test_a_cancel_of_the_caller_cancels_the_awaitable_too() -> None:
    """A caller cancelled during finished_within raises CancelledError, and the awaitable has been cancelled by then."""
    ended: list[str] = []
    caller = asyncio.ensure_future(finished_within(slow(ended), 10))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended == ["cancelled"]
