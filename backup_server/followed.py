"""Sessions after their delivery, until their outcome is final: the room that follows them.

`FollowedSessions.take_over` receives a delivered session from `Control`, and
`follow_claimed` a stored one whose outcome is still RUNNING that this replica claimed
(at start-up, and from a replica that died or stopped: `Replicas` sweeps); the session stays
live (GetSession, WatchSession read it from memory) and its writer keeps storing a batch
of changes per interval while `tracking.OutcomeTracker` follows its jobs. Once nothing of
it is followed any more, its last batch is stored and it leaves the running set.

A session other replicas follow part of is stored, once its outcome is final, by
`Storage.save_shared_progress`: its job counts and outcome are recounted from every row
in the same unit of work, so a late correction another replica stored (or is storing)
is never written over nor missed, and a change that recount finds runs the outcome
hooks here, once (`shared_records.run_correction`).

Shutdown stores what is known and leaves the outcome as it is: a live replica, or the
next start, claims the session and resumes.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from backup.errors import BackupError
from backup.v1 import resources_pb2 as pb

from .following import AGENT_LOST_AFTER, AgentStreams
from .outcomes import awaits_reconciliation, follows, is_final
from .running import RunningSessions
from .session_writer import SessionWriter
from .sessions import PROGRESS_INTERVAL, LiveSession, Progress, StoredOutcome
from .share_following import FollowedShares
from .shared_records import OutcomeHook, apply_correction, run_correction
from .storage.interface import Storage
from .tracking import LiveRecord, OutcomeTracker

log = logging.getLogger("backup_server.followed")

TRACK_AFTER = 0.02
# A shared session's `SessionWriter.store` (`FollowedSessions._shared_store`).
SharedStore = Callable[[Progress], Awaitable[tuple[float, StoredOutcome]]]
# How long a reply waits for the store of an outcome final at once (a refusing storage:
# the reply then shows what is stored, RUNNING, and the store goes on being retried).
STORE_WAIT = 2.0


class FollowedSessions:
    """Delivered sessions whose jobs are followed; `tracker.on_outcome` takes hooks."""

    def __init__(
        self,
        storage: Storage,
        agents: AgentStreams,
        running: RunningSessions,
        deadline: float,
        lost_after: float = AGENT_LOST_AFTER,
        reconcile_for: float | None = None,
        shares: FollowedShares | None = None,
        replica_id: str = "",
    ) -> None:
        """With `shares` (replicas over one database), each replica follows the jobs of
        its own share of a session; this one, the owner, merges the others' rows. With
        `replica_id`, the writes of a session it claimed are fenced on its ownership."""
        self._storage = storage
        self._replica_id = replica_id
        self.shares = shares
        self._merging: dict[str, asyncio.Task[None]] = {}
        self._running = running
        self.tracker = OutcomeTracker(
            agents, deadline, lost_after, release=self._release, reconcile_for=reconcile_for
        )
        self._writers: dict[str, tuple[SessionWriter, asyncio.Task[None]]] = {}
        self._ends: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def add_outcome_hook(self, hook: OutcomeHook) -> None:
        """`hook(session, corrected)` runs where an outcome becomes final (tracking.py),
        and where this replica stored a correction of a shared session's outcome."""
        self.tracker.on_outcome.append(hook)
        if self.shares is not None:
            self.shares.on_outcome.append(hook)

    @property
    def followed_jobs(self) -> int:
        """Jobs followed and computers being reconciled now (the backup_jobs_followed gauge)."""
        jobs = self.tracker.follower.count
        return jobs + self.shares.count if self.shares is not None else jobs

    async def take_over(self, writer: SessionWriter) -> None:
        """Follows a delivered session's jobs; it stays live until its outcome is final.
        An outcome final at once (nothing to follow) is stored before this returns, so
        the StartPolicy reply that carries it agrees with the storage's statuses."""
        ending = self._take_over(writer)
        if ending is not None:
            await asyncio.wait({ending}, timeout=STORE_WAIT)

    def _take_over(self, writer: SessionWriter) -> "asyncio.Task[None] | None":
        live = writer.live
        live.show_stored_outcome = True
        writer.on_fenced = lambda: self._stand_down(live)
        self._running.live[live.session.id] = live
        self._writers[live.session.id] = (writer, asyncio.ensure_future(writer.run()))
        results = live.session.computer_results
        if not any(follows(result) or awaits_reconciliation(result) for result in results):
            # Nothing to follow: the outcome is final at once, in the reply too.
            self.tracker.track(live)
            return self._ends.get(live.session.id)
        # A moment later, so the StartPolicy reply leaves before thousands of followers
        # are set up.
        handle = asyncio.get_running_loop().call_later(TRACK_AFTER, self._track, live)
        self._pending[live.session.id] = handle
        return None

    def _track(self, live: LiveSession) -> None:
        self._pending.pop(live.session.id, None)
        if self.shares is None:
            self.tracker.track(live)
            return
        session_id = live.session.id
        task = self._merging[session_id] = asyncio.ensure_future(self._track_shared(live))
        task.add_done_callback(lambda _: self._merging.pop(session_id, None))

    async def _track_shared(self, live: LiveSession) -> None:
        """Follows the owner's share of the session and merges the rows the other
        replicas' followers write, every PROGRESS_INTERVAL, until they are done."""
        session_id = live.session.id
        try:
            elsewhere = await self._storage.shared_positions(session_id)
        except BackupError as error:
            # Unknown shares: followed from here, all of them (a job followed twice
            # records the same end twice, which the statuses fold once).
            log.warning(
                "session %s: its shares not read, all its jobs followed here: %s",
                session_id,
                error.message,
                extra={"session_id": session_id},
            )
            elsewhere = []
        entry = self._writers.get(session_id)
        if elsewhere and entry is not None:
            entry[0].store = self._shared_store(entry[0])
        self.tracker.track(live, elsewhere)
        while positions := self.tracker.elsewhere(session_id):
            try:
                rows = await self._storage.followed_results(session_id, positions)
            except BackupError as error:
                log.warning(
                    "session %s: other replicas' followed rows not read: %s",
                    session_id,
                    error.message,
                    extra={"session_id": session_id},
                )
            else:
                self.tracker.merge_followed(session_id, rows)
            await asyncio.sleep(PROGRESS_INTERVAL)

    def _shared_store(self, writer: SessionWriter) -> SharedStore:
        live, shares = writer.live, self.shares
        session_id = live.session.id
        assert shares is not None

        async def store(progress: Progress) -> tuple[float, StoredOutcome]:
            if is_final(progress.outcome):
                self.tracker.storage_corrects(session_id)
            started = time.perf_counter()
            correction, stored = await self._storage.save_shared_progress(progress, *writer.owner)
            took = time.perf_counter() - started
            session = live.session
            if correction is not None:
                apply_correction(session, correction)
                run_correction(correction, shares.before_correction, self.tracker.on_outcome)
            elif not is_final(stored[0]) or stored == (
                session.outcome,
                session.outcome_time.ToNanoseconds(),
            ):
                return took, stored
            # The stored final outcome stands (this recount, or another replica's
            # correction): the record follows it, or every batch would differ again.
            session.outcome = stored[0]
            session.outcome_time.FromNanoseconds(stored[1])
            self.tracker.corrected(session_id)
            live.publish()
            return took, stored

        return store

    def follow_claimed(self, session: pb.PolicySession) -> bool:
        """Follows a stored session this replica claimed (`Storage.claim_followed_sessions`:
        left by a replica that died or stopped, or by this server's previous process)
        from its stored record; False if it is followed here already or following has
        stopped (shutdown: the session stays this replica's until its lease ends, then
        another claims it)."""
        if self._closed or session.id in self._running.live:
            return False
        log.info(
            "session %s: resuming following its jobs",
            session.id,
            extra={"session_id": session.id},
        )
        self._take_over(SessionWriter(self._storage, LiveSession(session), self._replica_id))
        return True

    def _stand_down(self, live: LiveSession) -> None:
        """A write of the session was fenced (another replica claimed it when this one's
        lease lapsed): its jobs are followed here no more, and it leaves memory, so its
        watchers go on from the storage."""
        session_id = live.session.id
        pending = self._pending.pop(session_id, None)
        if pending is not None:
            pending.cancel()
        merging = self._merging.pop(session_id, None)
        if merging is not None:
            merging.cancel()
        self.tracker.forget(session_id)
        self._writers.pop(session_id, None)
        if self._running.live.get(session_id) is live:
            del self._running.live[session_id]
        live.stood_down = True
        live.publish()

    def _release(self, live: LiveRecord) -> None:
        entry = self._writers.pop(live.session.id, None)
        if entry is None:
            return
        session_id = live.session.id
        task = self._ends[session_id] = asyncio.ensure_future(self._store_end(*entry))
        task.add_done_callback(lambda _: self._ends.pop(session_id, None))

    async def _store_end(self, writer: SessionWriter, writing: asyncio.Task[None]) -> None:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        try:
            await writer.store_end()
        finally:
            live = writer.live
            if not live.stood_down:
                self._running.live.pop(live.session.id, None)
                live.publish()
        if writer.fenced is not None:
            return  # its outcome is the new owner's to store
        session = live.session
        stats = session.statistics
        log.info(
            "session %s outcome %s stored: %d succeeded, %d failed, %d stopped, %d unknown",
            session.id,
            pb.SessionState.Name(session.outcome).removeprefix("SESSION_STATE_"),
            stats.jobs_succeeded,
            stats.jobs_failed,
            stats.jobs_stopped,
            stats.jobs_unknown,
            extra={"session_id": session.id},
        )

    async def close(self) -> None:
        """Stops following and stores what is known; outcomes still RUNNING stay so."""
        self._closed = True
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        merging = list(self._merging.values())
        for task in merging:
            task.cancel()
        await asyncio.gather(*merging, return_exceptions=True)
        await self.tracker.close()
        entries = list(self._writers.values())
        self._writers.clear()
        for writer, writing in entries:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            await writer.save()
            self._running.live.pop(writer.live.session.id, None)
            writer.live.publish()
        if self._ends:
            await asyncio.wait(set(self._ends.values()), timeout=5.0)
