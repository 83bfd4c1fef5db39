"""A clock that jumps: the scheduler's injected time for tests that cover days in milliseconds."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from backup_server.scheduler import Scheduler


class FakeClock:
    """Sleeping moves time to the instant asked for; past `limit` the clock stands still."""

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.limit: datetime | None = None
        self.reached = asyncio.Event()
        # Awaited before time moves: lets what the scheduler started finish at this instant.
        self.settle: Callable[[], Awaitable[None]] | None = None

    def now(self) -> datetime:
        return self.current

    async def sleep_until(self, instant: datetime, wake: asyncio.Event) -> None:
        if self.settle is not None:
            await self.settle()
        await asyncio.sleep(0)
        if wake.is_set():
            return
        if self.limit is not None and instant > self.limit:
            self.current = self.limit
            self.reached.set()
            await wake.wait()
            return
        self.current = max(self.current, instant)


async def run_for(scheduler: Scheduler, clock: FakeClock, span: timedelta) -> None:
    """Runs the scheduler's real loop until the fake clock has covered `span`."""
    clock.limit = clock.now() + span
    clock.reached.clear()
    clock.settle = scheduler.idle
    loop = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(clock.reached.wait(), timeout=60)
        await scheduler.idle()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


class ManualClock:
    """A clock that moves only when a test says so; sleeping waits to be woken."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    async def sleep_until(self, instant: datetime, wake: asyncio.Event) -> None:
        await wake.wait()
