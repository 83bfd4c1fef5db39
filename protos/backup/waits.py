"""Waits with a time limit whose cancellation is never lost, for both processes.

`asyncio.wait_for(aw, timeout)` on Python 3.11 returns `aw`'s result when its caller is
cancelled at the moment `aw` completes (an event set as a stop arrives), and the
cancellation is gone: a loop around it goes on after its task was told to end. That hung
the server's shutdown behind its scheduler (tests/test_scheduler_stop.py). `asyncio.wait`
never swallows its caller's cancellation, so both waits here are built on it; use them
instead of `asyncio.wait_for` around something that may finish as the caller is stopped.
"""

import asyncio
from collections.abc import Awaitable


async def finished_within(awaitable: Awaitable[object], seconds: float | None) -> bool:
    """Waits up to `seconds` (None: no limit) for `awaitable`; returns whether it
    finished (raising its exception if it failed). Past the limit it is cancelled and
    waited for. A cancellation of the caller always raises, the awaitable cancelled too."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([task], timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        # Waited for as wait_for does; a second cancel here raises as well.
        await asyncio.wait([task])
        raise
    if not done:
        task.cancel()
        await asyncio.wait([task])  # the caller's own cancellation still raises here
    if task.cancelled():
        return False
    task.result()
    return True


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Waits until `event` is set, for up to `seconds` (None: no limit); returns
    whether it is set. A cancellation during the wait always raises CancelledError."""
    if event.is_set():
        return True
    await finished_within(event.wait(), seconds)
    return event.is_set()
