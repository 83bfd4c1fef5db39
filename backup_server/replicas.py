"""This server among its replicas: its lease in the storage, and the sessions dead ones left.

Every server process is a replica with an id of its own (new at each start) and a lease:
a row in the storage it renews every third of `--replica-lease` (in a loop of its own, on
the storage's lease connection, so neither a sweep nor a busy pool delays it). A replica whose lease
ran out is dead; a live replica claims each session it left RUNNING and finishes it
(its pending computers get the command again), so no session stays RUNNING much past a
lease after its replica died; and it claims the delivered sessions whose jobs a dead (or
stopped) replica followed, and follows them, so an outcome is settled by exactly one live
replica. With SQLite there is one server: what the previous process left RUNNING is
marked FAILED (interrupted) at start-up, and its followed sessions are followed again.
The scheduler runs on the one replica that holds the storage's leadership lock.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from backup.errors import BackupError, LocalFault
from backup.v1 import resources_pb2 as pb

from . import recovery
from .storage.interface import Storage

log = logging.getLogger("backup_server.replicas")

DEFAULT_LEASE_SECONDS = 10.0


class Replicas:
    """Keeps this replica's lease and sweeps the sessions of replicas whose lease ran out."""

    def __init__(self, storage: Storage, address: str, lease: float = DEFAULT_LEASE_SECONDS):
        self.storage = storage
        self.id = f"r-{uuid.uuid4().hex[:12]}"
        self.address = address
        self.lease = lease
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._adopt: Callable[[str], Awaitable[None]] | None = None
        # Sessions claimed but not yet adopted: a claimed session is this replica's, so no
        # later sweep claims it again, and one a storage error kept from its adoption
        # would stay RUNNING as long as this replica lives; the next sweep adopts it.
        self._unadopted: list[str] = []
        self._follow: Callable[[pb.PolicySession], object] | None = None
        # When the last renewal that the storage took began (monotonic): the lease it
        # wrote runs from no earlier than that.
        self._renewed_at = -float("inf")

    async def start(
        self,
        adopt: Callable[[str], Awaitable[None]],
        follow: Callable[[pb.PolicySession], object] | None = None,
    ) -> None:
        """Takes this replica's lease, sweeps once, and keeps both going; `adopt(id)`
        takes over a session this replica claimed from a dead one, `follow(session)` a
        delivered one whose jobs nobody follows any more (None: this replica follows none)."""
        self._adopt, self._follow = adopt, follow
        await self._renew()
        await self.sweep()
        # Two loops: a sweep waiting for a pooled connection (or taking over a session)
        # must not hold the next renewal back.
        self._tasks = [asyncio.create_task(self._renewing()), asyncio.create_task(self._sweeping())]

    async def sweep(self) -> None:
        """Takes over the sessions of replicas whose lease ran out (PostgreSQL), or fails
        what a stopped server left RUNNING (SQLite)."""
        if not self.lease_holds():
            # Counted dead by the others, which may be claiming this replica's work: what
            # it claimed now would be claimed from it again.
            return
        if self._adopt is not None:
            self._unadopted += await self.storage.claim_sessions(self.id)
            while self._unadopted:
                await self._adopt(self._unadopted[0])
                del self._unadopted[0]
        await recovery.recover(self.storage, self.id)
        if self._follow is not None:
            # After recovery: what it failed (SQLite) has its delivered jobs followed too.
            for session in await self.storage.claim_followed_sessions(self.id):
                self._follow(session)

    async def _renewing(self) -> None:
        # Not `while True`: a cancel that lands as the pool hands over a connection can be
        # lost on Python 3.11 (asyncio.wait_for inside psycopg_pool), and stop() must end.
        while not self._stopped:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._renew()
            except BackupError as error:
                # The database is out of reach: the lease may lapse, and the others
                # will take over; this replica goes on trying.
                log.warning("replica %s: lease not renewed: %s", self.id, error.message)

    async def _renew(self) -> None:
        began = time.monotonic()
        await self.storage.renew_lease(self.id, self.address, self.lease)
        self._renewed_at = began

    async def lease_live(self) -> bool:
        """Whether the lease holds, renewed first if it has lapsed: a replica back from a
        stall takes new work (a session, the scheduler's next run) once the others count
        it live again, not before, and not never (a refusal would lose a scheduled run)."""
        if self.lease_holds():
            return True
        try:
            await self._renew()
        except BackupError as error:
            log.warning("replica %s: lease not renewed: %s", self.id, error.message)
            return False
        return self.lease_holds()

    def lease_holds(self) -> bool:
        """Whether this replica's lease, as last renewed, still holds: once it has lapsed
        the others may claim this replica's sessions and shares at any moment (its writes
        for them are then fenced), so it starts no new session until it renews."""
        return time.monotonic() - self._renewed_at < self.lease

    async def _sweeping(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.sweep()
            except BackupError as error:
                log.warning("replica %s: sweep not done: %s", self.id, error.message)

    async def live(self) -> list[str]:
        """The ids of the replicas whose lease holds, in order."""
        return await self.storage.live_replicas()

    async def is_leader(self) -> bool:
        """Whether this replica is the deployment's one scheduler (the storage's lock), its
        lease holding: a run started while it lapsed would be refused, and lost."""
        try:
            return await self.lease_live() and await self.storage.hold_leadership()
        except LocalFault:
            return False

    async def stop(self) -> None:
        """Stops renewing and gives the lease up, so the others need not wait it out."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task whose cancel was lost ends at its next look at _stopped.
            await asyncio.wait(self._tasks, timeout=self.lease)
        with contextlib.suppress(LocalFault):
            await self.storage.end_lease(self.id)
