"""A stop never overtakes the start commands of its policy, wherever the starts are sent from.

On one server a stop cancels the start commands still queued and follows the ones on the
wire (`FanOut(follow=...)`). With replicas, a computer's start may be in another
replica's hands: its owner changed between the start and the stop (a replica joined or
died), a share not yet polled, or a dead replica's share not yet claimed. So a stop's
command to a computer also waits until that computer's row is no longer pending in every
RUNNING start session of the policy stored before the stop (`EarlierStarts`): the row is
written by whoever sends that start, live holder or claimer, once its command has ended.

Why wait rather than cancel the pending row: a pending row does not say whether its
command is still queued or already on the wire at its holder, and marking each command
"sent" would cost a write before every send of every session. Waiting is correct in both
cases (the stop reaches the agent after the start has), and the commands queued on this
replica are still cancelled at once (`Control`, `Shares`). The wait is bounded: past
`wait_bound` the stop is sent anyway and the computers it did not wait for are logged, so
a database away or a stuck row can delay a stop, never lose it.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from backup.errors import BackupError
from backup.v1 import resources_pb2 as pb

from .sessions import PROGRESS_INTERVAL, LiveSession
from .storage.interface import Storage

log = logging.getLogger("backup_server.stop_order")

# A row is written within PROGRESS_INTERVAL of its answer; looking twice as often keeps the
# stop's extra delay under about one interval.
POLL_SECONDS = PROGRESS_INTERVAL / 2


def wait_bound(deadline: float, lease: float) -> float:
    """The longest a stop waits for earlier starts' rows: a dead holder's lease runs out,
    up to a third of a lease passes until a live replica claims its rows, which warms the
    channels (at most a deadline), sends (a deadline) and writes (a progress batch); a
    live holder needs only the last two. One second more for a loaded machine."""
    return lease * 4 / 3 + 2 * deadline + PROGRESS_INTERVAL + 1.0


# The live sessions of a start on this replica (its own, or shares it sends), by id: a row
# delivered there is known before it is written.
LocalStarts = Callable[[str], Iterable[LiveSession]]


class EarlierStarts:
    """What a stop session's fan-out follows besides this replica's own starts: the rows
    still pending in earlier RUNNING starts of the policy, in the database."""

    def __init__(
        self, storage: Storage, stop_session_id: str, local: LocalStarts, bound: float
    ) -> None:
        self._storage = storage
        self._session_id = stop_session_id
        self._local = local
        self._bound = bound
        self._ends = 0.0
        # Address -> the (start session id, position) rows it still waits for.
        self._waiting: dict[str, set[tuple[str, int]]] = {}
        self._loaded: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None

    async def finished_with(self, address: str) -> None:
        """Returns once no earlier start of the policy has `address` pending (or the
        bound has passed)."""
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)
        while address in self._waiting:
            # One poll at a time for every waiting computer, none left running after the
            # last waiter: a shielded single look that each waiter may start.
            if self._poll is None or self._poll.done():
                self._poll = asyncio.ensure_future(self._look())
            await asyncio.shield(self._poll)

    async def _load(self) -> None:
        self._ends = time.monotonic() + self._bound
        try:
            rows = await self._storage.pending_earlier_starts(self._session_id)
        except BackupError as error:
            # Not known: sent as one server would, after this replica's own starts.
            log.warning(
                "session %s: earlier starts of the policy not read, the stop does not wait"
                " for them: %s",
                self._session_id,
                error.message,
                extra={"session_id": self._session_id},
            )
            return
        for start_id, position, address in rows:
            self._waiting.setdefault(address, set()).add((start_id, position))
        self._drop_delivered_here()
        if self._waiting:
            log.info(
                "session %s: %d computers still pending in earlier starts of the policy;"
                " the stop to each waits until its start has ended",
                self._session_id,
                len(self._waiting),
                extra={"session_id": self._session_id},
            )

    async def _look(self) -> None:
        await asyncio.sleep(POLL_SECONDS)
        self._drop_delivered_here()
        if not self._waiting:
            return
        if time.monotonic() >= self._ends:
            log.warning(
                "session %s: %d computers sent the stop without their earlier start's"
                " command ending within %.1f s",
                self._session_id,
                len(self._waiting),
                self._bound,
                extra={"session_id": self._session_id},
            )
            self._waiting.clear()
            return
        try:
            rows = await self._storage.pending_earlier_starts(self._session_id)
        except BackupError as error:
            log.warning(
                "session %s: earlier starts not read: %s",
                self._session_id,
                error.message,
                extra={"session_id": self._session_id},
            )
            return
        pending = {(start_id, position) for start_id, position, _ in rows}
        for address in list(self._waiting):
            self._waiting[address] &= pending
            if not self._waiting[address]:
                del self._waiting[address]

    def _drop_delivered_here(self) -> None:
        """Forgets the rows this replica has delivered already (written or not yet)."""
        for address in list(self._waiting):
            rows = {
                (start_id, position)
                for start_id, position in self._waiting[address]
                if not any(
                    live.session.computer_results[position].delivery != pb.DELIVERY_PENDING
                    for live in self._local(start_id)
                )
            }
            if rows:
                self._waiting[address] = rows
            else:
                del self._waiting[address]
