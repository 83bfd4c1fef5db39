"""The server's two edges in time: what a stopped server left behind, and stopping well."""

import asyncio
import logging

from .running import RunningSessions
from .storage.interface import Storage

log = logging.getLogger("backup_server.recovery")


async def recover(storage: Storage, replica_id: str = "") -> list[str]:
    """Marks sessions a crash left RUNNING as FAILED, with a warning; returns their ids
    (never those of `replica_id`, nor of a replica whose lease holds)."""
    interrupted = await storage.fail_interrupted_sessions(replica_id)
    for session_id in interrupted:
        log.warning(
            "session %s was running when the server stopped: marked FAILED (interrupted)",
            session_id,
            extra={"session_id": session_id},
        )
    return interrupted


async def shutdown(running: RunningSessions, grace: float) -> None:
    """Lets running sessions finish for `grace` seconds, then cancels what remains."""
    if not running.tasks:
        return
    log.info("waiting up to %.1f s for %d running sessions", grace, len(running.tasks))
    _, unfinished = await asyncio.wait(set(running.tasks), timeout=grace)
    for task in unfinished:
        task.cancel()
    if unfinished:
        await asyncio.wait(unfinished)
