"""A session's computers shared among the live replicas, each sent to by its one owner.

When a session is stored, each pending computer is owned by one live replica: the one
with the highest rendezvous hash of (replica id, computer address) (`owner_of`), so a
computer stays with the same replica from session to session and its channel stays warm
there, and a replica joining or leaving moves only about 1/N of the computers. The
receiving replica sends to its own share at once; the others find theirs by polling the
pending rows assigned to them (`Shares.run`, every POLL_SECONDS) and write each
computer's result into its row. The receiving replica keeps the live session: it merges
the rows the others deliver (`merged`), so its watchers and its reply see every computer,
and its header is computed from them there. A dead replica's pending rows are claimed by
a live one within a lease and sent again (StartJob is idempotent per session, StopJob
harmless twice), after warming the channels to them. With SQLite there is one server and
every computer is its own.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable

from backup.errors import BackupError, Fenced, NotFound
from backup.v1 import resources_pb2 as pb

from .commands import COMMAND_OF_ACTION, Command
from .fanout import AgentTransport, FanOut, Followed, ShareFanOut
from .running import RunningSessions
from .sessions import PROGRESS_INTERVAL, LiveSession, ResultChange, recount
from .share_owners import split
from .stop_order import EarlierStarts, wait_bound
from .storage.interface import Storage

log = logging.getLogger("backup_server.shares")

# How often a replica looks for computers assigned to it (a share starts within this of
# being stored), and how often the receiving replica reads the rows others delivered.
POLL_SECONDS = 0.2
STOP_WAIT_SECONDS = 10.0
MERGE_SECONDS = 0.1
POLICY_GONE = "cancelled: the policy was deleted before this replica sent its share"


def merge(live: LiveSession, changes: Iterable[ResultChange]) -> int:
    """Records the computers another replica delivered into the live session; returns how
    many were new to it."""
    merged = 0
    for change in changes:
        if live.session.computer_results[change.position].delivery != pb.DELIVERY_PENDING:
            continue
        job = pb.Job.FromString(change.job) if change.job else None
        live.record(
            change.position,
            change.delivery,
            change.detail,
            change.latency_ns,
            change.job_id,
            job,
            # Never written back from here: its replica follows the job and writes the
            # row, and a stale copy written later would undo the job's end.
            stored=True,
        )
        merged += 1
    return merged


class Shares:
    """This replica's part in sharing sessions: assigning, sending, merging, taking over."""

    def __init__(
        self,
        storage: Storage,
        transport: AgentTransport,
        deadline: float,
        max_in_flight: int,
        replica_id: str,
        lease: float,
        running: RunningSessions | None = None,
    ) -> None:
        """`running` is the replica's own sessions (`Control`'s): its starts and the
        shares of starts sent here are one registry, so a stop received here or sent here
        as a share follows (and cancels the queued commands of) both."""
        self._storage = storage
        self._transport = transport
        self._deadline = deadline
        self._max_in_flight = max_in_flight
        self.replica_id = replica_id
        self._lease = lease
        # Positions this replica is sending for other replicas' sessions, by session id.
        self._in_flight: dict[str, set[int]] = {}
        # Positions it claimed from dead replicas and has not sent yet: warmed first.
        self._taken: dict[str, set[int]] = {}
        self.running = running or RunningSessions()
        # The live sessions of the shares this replica is sending, by session id: a stop
        # waiting for an earlier start's row (stop_order) sees it delivered here at once.
        self._lives: dict[str, list[LiveSession]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        # `on_delivered(live, positions)`: this replica's share of a session whose jobs
        # are followed was sent; it follows them (share_following.FollowedShares.follow).
        self.on_delivered: Callable[[LiveSession, list[int]], None] | None = None
        # Whether this replica's lease holds (Replicas.lease_holds): a replica the others
        # may count dead claims nothing, or it would be claimed from it again at once.
        self.lease_holds: Callable[[], bool] = lambda: True

    async def assign(self, session: pb.PolicySession) -> list[int] | None:
        """Shares a stored session's pending computers among the live replicas; returns
        the positions this replica sends, or None for all of them (nothing to share, or
        the storage refused: the session is stored, so it must be sent from here)."""
        try:
            members = await self._storage.share_members(self.replica_id)
            if len(members) < 2:
                return None
            shares = split(session, members)
            own = shares.pop(self.replica_id)
            others = {member: positions for member, positions in shares.items() if positions}
            if not others:
                return None
            await self._storage.assign_shares(session.id, others)
        except BackupError as error:
            # The rows stay the owner's: this replica sends to every computer.
            log.warning(
                "session %s: computers not shared, all sent from here: %s",
                session.id,
                error.message,
                extra={"session_id": session.id},
            )
            return None
        log.info(
            "session %s: %d computers sent from here, %s",
            session.id,
            len(own),
            ", ".join(f"{len(p)} by {member}" for member, p in sorted(others.items())),
            extra={"session_id": session.id},
        )
        return own

    async def merged(self, live: LiveSession, own: Collection[int]) -> None:
        """Merges what other replicas deliver of the session (all but the positions `own`
        that this replica sends) as it lands, until none is pending."""
        session_id, own = live.session.id, set(own)
        while live.session.statistics.pending:
            await asyncio.sleep(MERGE_SECONDS)
            pending = [
                position
                for position, result in enumerate(live.session.computer_results)
                if result.delivery == pb.DELIVERY_PENDING and position not in own
            ]
            if not pending:
                continue
            try:
                changes = await self._storage.delivered_results(session_id, pending)
            except BackupError as error:
                log.warning(
                    "session %s: other replicas' deliveries not read: %s",
                    session_id,
                    error.message,
                    extra={"session_id": session_id},
                )
                continue
            if merge(live, changes):
                live.publish()

    async def own_pending(self, session: pb.PolicySession) -> list[int]:
        """The positions still pending of a session this replica took over as its owner
        (the dead owner's share)."""
        return (await self._storage.pending_shares(session.id)).get("", [])

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def run(self) -> None:
        """Every POLL_SECONDS: sends the computers newly assigned to this replica; every
        third of a lease, first claims those of replicas whose lease ran out."""
        claimed_at = 0.0
        # Not `while True`: a cancel that lands as the pool hands over a connection can be
        # lost on Python 3.11 (asyncio.wait_for inside psycopg_pool), and stop() must end.
        while not self._stopped:
            await asyncio.sleep(POLL_SECONDS)
            try:
                if time.monotonic() - claimed_at >= self._lease / 3 and self.lease_holds():
                    claimed_at = time.monotonic()
                    for session_id, positions in (
                        await self._storage.claim_shares(self.replica_id)
                    ).items():
                        self._taken.setdefault(session_id, set()).update(positions)
                        log.warning(
                            "session %s: %d computers of a replica that stopped taken over",
                            session_id,
                            len(positions),
                            extra={"session_id": session_id},
                        )
                assigned = await self._storage.assigned_shares(self.replica_id)
            except BackupError as error:
                log.warning("replica %s: shares not polled: %s", self.replica_id, error.message)
                continue
            for session_id, positions in assigned.items():
                sending = self._in_flight.setdefault(session_id, set())
                new = [position for position in positions if position not in sending]
                if new:
                    sending.update(new)
                    task = asyncio.create_task(self._send(session_id, new))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _send(self, session_id: str, found: list[int]) -> None:
        """Sends one share of another replica's session and writes its rows."""
        positions = found
        try:
            session = await self._storage.get_session(session_id)
            recount(session)
            try:
                policy, _ = await self._storage.get_policy_and_groups(session.policy_id)
                reason = ""
            except NotFound:
                policy, reason = pb.BackupPolicy(id=session.policy_id), POLICY_GONE
            results = session.computer_results
            positions = [p for p in positions if results[p].delivery == pb.DELIVERY_PENDING]
            if not positions:
                return  # written by this replica since the poll that found them
            taken = self._taken.pop(session_id, set())
            live = LiveSession(session)
            command = COMMAND_OF_ACTION[session.action](session.id, policy)
            fanout = self._fanout(live, command, positions, warm=bool(taken & set(positions)))
            if reason:
                fanout.cancel_queued(reason)
            self._lives.setdefault(session_id, []).append(live)
            # One write of the share at a time: the last one below waits for a periodic
            # one still in flight (shielded from the cancel), so the rows are all stored
            # before the poll may find them pending again and send them a second time.
            saving = asyncio.Lock()
            writing = asyncio.create_task(self._write(live, fanout, saving))
            try:
                await fanout.run()
            finally:
                if command.registers_as_start:
                    self.running.remove_start(session.policy_id, fanout)
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
                try:
                    await asyncio.shield(self._save(live, fanout, saving))
                finally:
                    self._forget(session_id, live)
                    if not live.stood_down:
                        # Rows not stored went back to `live`, whose follower writes them.
                        self._delivered(live, positions)
            if live.stood_down:
                return
            received = sum(1 for p in positions if results[p].delivery == pb.DELIVERY_RECEIVED)
            log.info(
                "session %s: share of %d computers delivered by replica %s, %d received",
                session_id,
                len(positions),
                self.replica_id,
                received,
                extra={"session_id": session_id},
            )
        except BackupError as error:
            # What was not stored stays pending in its rows: the next poll sends it again.
            log.warning(
                "session %s: share not delivered: %s",
                session_id,
                error.message,
                extra={"session_id": session_id},
            )
        finally:
            sending = self._in_flight.get(session_id, set())
            sending.difference_update(found)
            if not sending:
                self._in_flight.pop(session_id, None)

    def _delivered(self, live: LiveSession, positions: list[int]) -> None:
        results = live.session.computer_results
        sent = [p for p in positions if results[p].delivery != pb.DELIVERY_PENDING]
        if (
            self.on_delivered is not None
            and sent
            and (live.session.outcome == pb.SESSION_STATE_RUNNING)
        ):
            self.on_delivered(live, sent)

    def _fanout(
        self, live: LiveSession, command: Command, positions: list[int], warm: bool
    ) -> FanOut:
        """The share's fan-out; a stop's follows this replica's running starts of the
        policy (cancelling their commands not yet sent) and the earlier starts' rows."""
        policy_id = live.session.policy_id
        follow: list[Followed] = []
        if command.cancels_queued_starts:
            starts = list(self.running.starts.get(policy_id, ()))
            for start in starts:
                start.cancel_queued(
                    f"cancelled: stop session {live.session.id} arrived before this command"
                    " was sent"
                )
            follow = [*starts, self.earlier_starts(live.session.id)]
        fanout = ShareFanOut(
            live,
            self._transport,
            command,
            self._deadline,
            self._max_in_flight,
            positions,
            follow,
            warm,
        )
        if command.registers_as_start:
            self.running.add_start(policy_id, fanout)
        return fanout

    def earlier_starts(self, stop_session_id: str) -> EarlierStarts:
        """What a stop's command to each computer waits for besides this replica's
        starts: the rows other replicas (or claimers) still hold of earlier starts."""
        bound = wait_bound(self._deadline, self._lease)
        return EarlierStarts(self._storage, stop_session_id, self._started_here, bound)

    def _started_here(self, session_id: str) -> list[LiveSession]:
        own = self.running.live.get(session_id)
        return [*self._lives.get(session_id, ()), *([own] if own is not None else [])]

    def _forget(self, session_id: str, live: LiveSession) -> None:
        lives = self._lives.get(session_id, [])
        if live in lives:
            lives.remove(live)
        if not lives:
            self._lives.pop(session_id, None)

    async def _write(self, live: LiveSession, fanout: FanOut, saving: asyncio.Lock) -> None:
        written = time.monotonic()
        while True:
            # Every interval from the last write's start (a write on a busy loop takes a
            # good part of it): the rows reach watchers on other replicas that much sooner.
            await asyncio.sleep(max(0.0, written + PROGRESS_INTERVAL - time.monotonic()))
            written = time.monotonic()
            if live.dirty:
                with contextlib.suppress(BackupError):  # the rows wait for the next batch
                    await asyncio.shield(self._save(live, fanout, saving))
                if live.stood_down:
                    return

    async def _save(self, live: LiveSession, fanout: FanOut, saving: asyncio.Lock) -> None:
        """Writes the share's changed rows, after any write of them still in flight;
        raises the storage's error, the rows having gone back to be written with the next
        batch. A refusal (Fenced: they are not ours) stands the share down here, in the
        write itself: its caller may have been cancelled while it was in flight."""
        async with saving:
            if not live.dirty or live.stood_down:
                return
            progress = live.take_progress()
            try:
                await self._storage.save_share(live.session.id, progress.results, self.replica_id)
            except Fenced as error:
                self._stand_down(live, fanout, error)
            except BackupError:
                live.give_back(progress)
                raise

    @staticmethod
    def _stand_down(live: LiveSession, fanout: FanOut, error: Fenced) -> None:
        """Stops sending a share whose rows another replica claimed (this one's lease
        lapsed): nothing more of it is written or followed from here. Its rows still
        this replica's stay pending, and the next poll sends them again."""
        if live.stood_down:
            return
        live.stood_down = True
        fanout.stand_down()
        session_id = live.session.id
        log.warning(
            "session %s: this replica stood down from its share: %s",
            session_id,
            error.message,
            extra={"session_id": session_id},
        )

    async def stop(self) -> None:
        """Stops polling and sending; what was not stored stays pending in its rows, for
        another replica to claim once this one's lease is gone."""
        self._stopped = True
        tasks = [task for task in (self._task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task whose cancel was lost ends at its next look at _stopped.
            await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
