"""The scheduler stops when told, even when a wake-up lands at the same moment: Python
3.11's asyncio.wait_for returned the wake-up and dropped the cancellation, the scheduler
ticked on, and on PostgreSQL the server's shutdown waited for it for minutes."""

import asyncio
from datetime import datetime

from backup_server.app import BackupServer
from backup_server.scheduler import Scheduler


def ticks_once_cancelled(scheduler: Scheduler) -> list[datetime]:
    """The ticks the scheduler begins after its task was cancelled (recorded as they begin)."""
    begun: list[datetime] = []
    tick = scheduler.tick

    async def counted(now: datetime) -> datetime:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            begun.append(now)
        return await tick(now)

    scheduler.tick = counted  # type: ignore[method-assign]
    return begun


async def test_a_wake_at_the_moment_of_stopping_does_not_keep_the_scheduler_running(
    start_server,
) -> None:
    """wake() and close() together, at every interleaving of the loop's next steps: the scheduler's task ends, and begins no tick once it is cancelled."""
    for steps in range(3):
        server: BackupServer = await start_server()
        scheduler, task = server.scheduler, server._scheduling
        assert scheduler is not None and task is not None
        begun = ticks_once_cancelled(scheduler)
        await asyncio.sleep(0.1)  # the scheduler has ticked and sleeps until its next run
        scheduler.wake()
        for _ in range(steps):
            await asyncio.sleep(0)
        await asyncio.wait_for(scheduler.close(task), 5.0)
        assert task.done() and begun == [], steps
