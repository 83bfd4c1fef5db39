"""Stores a running session: a batch of its changes every interval, then its end, each
write fenced on this replica still owning it."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from backup.errors import BackupError, Fenced, LocalFault, ResourceExhausted
from backup.v1 import resources_pb2 as pb

from .sessions import PROGRESS_INTERVAL, LiveSession, Progress, StoredOutcome

if TYPE_CHECKING:
    from .storage.interface import Storage

# The logger of the session records it writes: operators filter on it.
log = logging.getLogger("backup_server.sessions")

# How often an ended session the storage refused is offered again.
STORE_RETRY_INTERVAL = 2.0


class SessionWriter:
    """Stores one running session: a batch of its changes every interval, then its end.

    A write the storage refuses (a full database disk) loses nothing: its results go back
    into the next batch. If the end cannot be stored, the session ends FAILED anyway with
    the storage's reason as a warning, watchers are told that, and `store_end` keeps
    trying until it is stored; until then the stored row says RUNNING, which recovery
    turns into FAILED should the server stop first.
    """

    def __init__(self, storage: "Storage", live: LiveSession, owner: str = "") -> None:
        """`owner`: this replica's id, on which each write is fenced (`save_progress`)."""
        self._storage = storage
        self.live = live
        self.failure: BackupError | None = None
        self._owner = owner
        # Once a write is refused (another replica owns the session now), nothing more is
        # written from here and `on_fenced`, its holder's stand-down, is called.
        self.fenced: Fenced | None = None
        self.on_fenced: Callable[[], None] | None = None
        # One save at a time, each taking its batch only once the one before is stored: a
        # cancelled writer's shielded save goes on while the end is written, and on
        # PostgreSQL (a pool, no single writer) the two could commit out of order, an older
        # header (RUNNING) landing over the final one.
        self._saving = asyncio.Lock()
        # Stores a batch: (seconds, the outcome stored: the batch's unless recounted from
        # the rows, for a session other replicas follow part of: followed.py).
        self.store: Callable[[Progress], Awaitable[tuple[float, StoredOutcome]]] = self._store

    async def _store(self, progress: Progress) -> tuple[float, StoredOutcome]:
        took = await self._storage.save_progress(progress, *self.owner)
        return took, (progress.outcome, progress.outcome_ns)

    @property
    def owner(self) -> tuple[str, ...]:
        """The fence of this session's writes: (this replica's id,), or () on one server."""
        return (self._owner,) if self._owner else ()

    async def save(self) -> bool:
        """Writes what changed since the last write; False if the storage refused it."""
        async with self._saving:
            return await self._save()

    async def _save(self) -> bool:
        if self.fenced is not None:
            return False
        progress = self.live.take_progress()
        try:
            took, stored = await self.store(progress)
        except Fenced as error:
            # Not given back: what this replica learned is the claimer's to learn again.
            self.fenced = error
            session_id = self.live.session.id
            log.warning(
                "session %s: this replica stood down: %s",
                session_id,
                error.message,
                extra={"session_id": session_id},
            )
            if self.on_fenced is not None:
                self.on_fenced()
            return False
        except (LocalFault, ResourceExhausted) as error:
            self.live.give_back(progress)
            if self.failure is None:
                log.warning(
                    "session %s: progress not stored, kept in memory: %s",
                    self.live.session.id,
                    error.message,
                    extra={"session_id": self.live.session.id},
                )
            self.failure = error
            return False
        self.live.stored_outcome = stored
        self.live.storage_seconds += took
        self.live.storage_writes += 1
        self.failure = None
        return True

    async def run(self, interval: float = PROGRESS_INTERVAL) -> None:
        """Every interval: one write for the outcomes so far, then wake the watchers."""
        while self.fenced is None:
            await asyncio.sleep(interval)
            live = self.live
            if live.dirty or live.job_ends or live.outcome_unstored or live.header_changed:
                # Shielded: the batch has left `live.dirty`, so it must reach the storage
                # (or go back) even if the fan-out ends now and cancels this writer; the
                # final write waits for it (`save` holds a lock).
                await asyncio.shield(self.save())
                self.live.publish()

    async def end(self) -> bool:
        """Fixes the session's end and stores it; on failure the session ends FAILED with
        the reason as a warning (the final word watchers get). False if not stored."""
        self.live.finish()
        if await self.save():
            return True
        if self.fenced is not None:
            return False  # its end is the new owner's to write
        assert self.failure is not None
        self.live.session.state = pb.SESSION_STATE_FAILED
        self.live.session.warnings.append(
            f"the end of this session could not be stored: {self.failure.message}"
        )
        return await self.save()

    async def store_end(self, interval: float = STORE_RETRY_INTERVAL) -> None:
        """Retries storing an ended session until the storage takes it."""
        # Polled: nothing announces that the disk has room again.
        while True:
            if await self.save():
                break
            if self.fenced is not None:
                return
            await asyncio.sleep(interval)
        log.info(
            "session %s: its end is stored now",
            self.live.session.id,
            extra={"session_id": self.live.session.id},
        )
