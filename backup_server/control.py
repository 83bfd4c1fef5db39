"""Running start and stop sessions: resolve the computers, store the session, fan out.

Answers about sessions are `backup_server.queries`; recovery and shutdown are
`backup_server.recovery`; what each action sends is a `commands.Command`.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from backup import defaults, validation
from backup.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from backup.ids import new_session_id
from backup.v1 import resources_pb2 as pb

from .commands import COMMAND_OF_ACTION, Command
from .fanout import AgentTransport, FanOut, Followed, ShareFanOut
from .followed import FollowedSessions
from .monitoring import NoObserver, SessionObserver
from .origins import Origin, check_computer_names, narrow, operator_retry, reachable
from .queries import delivered
from .running import RunningSessions
from .session_writer import SessionWriter
from .sessions import LiveSession, new_session, recount, resolve_targets
from .shares import Shares
from .storage.interface import Storage

log = logging.getLogger("backup_server.control")


class Control:
    """Runs start and stop sessions to their end, each stored as it goes."""

    def __init__(
        self,
        storage: Storage,
        transport: AgentTransport,
        deadline: float,
        max_in_flight: int = defaults.MAX_IN_FLIGHT,
        running: RunningSessions | None = None,
        followed: FollowedSessions | None = None,
        observer: SessionObserver | None = None,
        replica_id: str = "",
        shares: Shares | None = None,
        lease_live: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """With `followed`, each delivered session is handed over to have its jobs
        followed to their outcome; without, a session ends with its delivery. With
        `shares`, a session's computers are shared among the live replicas."""
        self._storage = storage
        self._followed = followed
        self._transport = transport
        self._deadline = deadline
        self._max_in_flight = max_in_flight
        self.running = running or RunningSessions()
        self._observer = observer or NoObserver()
        # Stored as each session's owner: the replica whose lease keeps it RUNNING.
        self._replica_id = replica_id
        self._shares = shares
        # Replicas: whether this one's lease holds; a session started once it has lapsed
        # would be claimed by another replica at once (UNAVAILABLE: retry, elsewhere).
        self._lease_live = lease_live

    async def start_policy(
        self,
        policy_id: str,
        session_id: str = "",
        computer_names: Sequence[str] = (),
        retry_of_session_id: str = "",
    ) -> pb.PolicySession:
        """An operator's start: of every computer, of the named ones, or of those that did
        not succeed in `retry_of_session_id` (trigger OPERATOR, attempt 0)."""
        validation.require_id("policy_id", policy_id)
        validation.optional_id("session_id", session_id)
        check_computer_names(computer_names)
        origin = Origin()
        if validation.optional_id("retry_of_session_id", retry_of_session_id):
            try:
                retried = await self._storage.get_session(retry_of_session_id)
            except NotFound:
                raise NotFound(
                    f"retry_of_session_id: session {retry_of_session_id!r} not found",
                    field="retry_of_session_id",
                ) from None
            origin = operator_retry(retried, policy_id, computer_names)
        return await self._run(
            policy_id, pb.SESSION_ACTION_START, session_id, origin, computer_names
        )

    async def stop_policy(self, policy_id: str, session_id: str = "") -> pb.PolicySession:
        validation.require_id("policy_id", policy_id)
        validation.optional_id("session_id", session_id)
        return await self._run(policy_id, pb.SESSION_ACTION_STOP, session_id, Origin())

    async def run_as(
        self, policy_id: str, action: pb.SessionAction, origin: Origin
    ) -> pb.PolicySession:
        """A session the scheduler runs: the operator's path, with its trigger and targets."""
        return await self._run(policy_id, action, "", origin)

    async def _run(
        self,
        policy_id: str,
        action: pb.SessionAction,
        session_id: str,
        origin: Origin,
        computer_names: Sequence[str] = (),
    ) -> pb.PolicySession:
        if session_id:
            # A client retrying (on this or another replica) gets the session it started.
            existing = await self._existing(session_id, policy_id, action)
            if existing is not None:
                return existing
        if self._lease_live is not None and not await self._lease_live():
            raise Unavailable(
                "this server replica's lease on the database has lapsed and cannot be"
                " renewed; retry, on another replica if this one stays so"
            )
        policy, groups = await self._storage.get_policy_and_groups(policy_id)
        targets = narrow(
            resolve_targets(policy, groups), computer_names, policy_id, field_name="computer_names"
        )
        if origin.computer_names:
            targets = reachable(targets, origin)
        if not targets:
            raise FailedPrecondition(f"policy {policy_id!r} has no computers to send to")
        self._transport.check_capacity(
            [target.computer.address for target in targets if not target.skipped_because]
        )
        session = new_session(session_id or new_session_id(), policy_id, action, targets)
        origin.stamp(session)
        if self._followed is not None:
            session.outcome = pb.SESSION_STATE_RUNNING
        command = COMMAND_OF_ACTION[action](session.id, policy)
        try:
            took = await self._storage.insert_session(session, self._replica_id)
        except AlreadyExists:
            # Another replica stored a session with this id a moment ago.
            existing = await self._existing(session.id, policy_id, action)
            if existing is None:
                raise
            return existing
        if command.cancels_queued_starts:
            # After the insert, so a stop refused for a taken session id cancels nothing.
            self._cancel_queued_starts(policy_id, session.id)
        # The computers this replica sends to (None: all); the others' come from the rows.
        own = await self._shares.assign(session) if self._shares is not None else None
        live = LiveSession(session)
        live.storage_seconds, live.storage_writes = took, 1
        log.info(
            "session %s: %s policy %s on %d computers (%d skipped)",
            session.id,
            pb.SessionAction.Name(action).removeprefix("SESSION_ACTION_").lower(),
            policy_id,
            session.statistics.pending,
            session.statistics.skipped,
            extra={"session_id": session.id},
        )
        ended = await asyncio.shield(self._launch(live, command, own=own))
        if live.stood_down:
            # Another replica owns the session now (this one's lease lapsed): the caller
            # gets what a retry with the same session_id gets, the session once its new
            # owner has delivered it (UNAVAILABLE if the database cannot be reached).
            return await delivered(self._storage, self.running.live, session.id)
        return ended

    def _launch(
        self,
        live: LiveSession,
        command: Command,
        cancel_reason: str = "",
        own: list[int] | None = None,
        warm: bool = False,
    ) -> "asyncio.Task[pb.PolicySession]":
        """Runs the fan-out of a stored session's pending computers (or, with a
        `cancel_reason`, records them all cancelled), not tied to the caller's RPC: a
        client that hangs up does not stop commands half-way, and shutdown finishes or
        cancels it explicitly."""
        session, policy_id = live.session, live.session.policy_id
        # Registered before any await, so a watcher never finds it stored but not live.
        self.running.live[session.id] = live
        # A stop follows the commands a running start of the policy has on the wire here,
        # and with replicas the earlier starts' rows held elsewhere (stop_order).
        follow: list[Followed] = []
        if command.cancels_queued_starts:
            follow.extend(self.running.starts.get(policy_id, ()))
            if self._shares is not None:
                follow.append(self._shares.earlier_starts(session.id))
        fanout = (
            FanOut(live, self._transport, command, self._deadline, self._max_in_flight, follow)
            if own is None
            else ShareFanOut(
                live,
                self._transport,
                command,
                self._deadline,
                self._max_in_flight,
                own,
                follow,
                warm,
            )
        )
        if cancel_reason:
            fanout.cancel_queued(cancel_reason)
        if command.registers_as_start:
            self.running.add_start(policy_id, fanout)
        writer = SessionWriter(self._storage, live, self._replica_id)
        run = asyncio.create_task(self._deliver(writer, fanout))
        self.running.keep(run)
        return run

    async def adopt(self, session_id: str) -> None:
        """Takes over a session a stopped replica left running (its owner is now this
        replica) and returns at once: its computers still pending get the command again,
        which is safe because StartJob is idempotent per session and StopJob harmless
        twice."""
        session = await self._storage.get_session(session_id)
        # The header is as the dead replica last wrote it; the rows may say more.
        recount(session)
        reason = ""
        try:
            policy, _ = await self._storage.get_policy_and_groups(session.policy_id)
        except NotFound:
            policy = pb.BackupPolicy(id=session.policy_id)
            reason = "cancelled: the policy was deleted before this replica took the session over"
        log.warning(
            "session %s: taken over from a replica that stopped; %d computers still to deliver",
            session.id,
            session.statistics.pending,
            extra={"session_id": session.id},
        )
        # Its own share (the dead owner's), warmed first; other replicas' shares arrive
        # through the rows.
        own = await self._shares.own_pending(session) if self._shares is not None else None
        self._launch(
            LiveSession(session),
            COMMAND_OF_ACTION[session.action](session.id, policy),
            reason,
            own,
            warm=True,
        )

    async def _existing(
        self, session_id: str, policy_id: str, action: pb.SessionAction
    ) -> pb.PolicySession | None:
        """The session `session_id` names once its delivery has ended, if it is one of
        `policy_id` and `action`; None if there is none; AlreadyExists if it is another's."""
        try:
            stored = await self._storage.get_session(session_id)
        except NotFound:
            return None
        if (stored.policy_id, stored.action) != (policy_id, action):
            raise AlreadyExists(
                f"session {session_id!r} already exists, a "
                f"{pb.SessionAction.Name(stored.action).removeprefix('SESSION_ACTION_').lower()}"
                f" of policy {stored.policy_id!r}; choose another session_id"
            )
        return await delivered(self._storage, self.running.live, session_id)

    def _cancel_queued_starts(self, policy_id: str, stop_session_id: str) -> None:
        for fanout in self.running.starts.get(policy_id, set()):
            cancelled = fanout.cancel_queued(
                f"cancelled: stop session {stop_session_id} arrived before this command was sent"
            )
            if cancelled:
                log.info(
                    "session %s: %d queued start commands cancelled by stop session %s",
                    fanout.live.session.id,
                    cancelled,
                    stop_session_id,
                    extra={"session_id": fanout.live.session.id},
                )

    async def _deliver(self, writer: SessionWriter, fanout: FanOut) -> pb.PolicySession:
        live = writer.live
        policy_id = live.session.policy_id
        writing = asyncio.create_task(writer.run())
        # A shared session: what other replicas deliver is merged from the rows as it lands.
        merging = (
            asyncio.create_task(self._shares.merged(live, fanout.positions))
            if self._shares is not None and isinstance(fanout, ShareFanOut)
            else None
        )
        writer.on_fenced = lambda: self._stand_down(live, fanout, merging)
        try:
            await fanout.run()
            if merging is not None:
                # Not `await merging`: a stand-down cancels it, and that ends this too.
                await asyncio.wait({merging})
                if not merging.cancelled():
                    merging.result()
        finally:
            for task in (writing, merging):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if fanout.command.registers_as_start:
                self.running.remove_start(policy_id, fanout)
            if not live.stood_down:
                await self._end(writer)
        # A copy: following goes on changing the live record after the reply is sent.
        return live.snapshot()

    async def _end(self, writer: SessionWriter) -> None:
        """Stores a delivered session's end and hands it over to be followed."""
        live = writer.live
        # Whatever the storage says, every watcher hears the end and the session
        # leaves the running set once its end is stored (or the server stops).
        stored = await writer.end()
        if live.stood_down:
            return  # its end was fenced: it is another replica's to write and to say
        self._observer.session_delivered(live.session)
        if stored and self._followed is not None:
            await self._followed.take_over(writer)
        else:
            if live.session.outcome == pb.SESSION_STATE_RUNNING:
                # Its record could not be stored: nothing is followed from a record
                # that does not exist, and the outcome is what watchers are told.
                live.session.outcome = pb.SESSION_STATE_FAILED
                live.session.outcome_time.GetCurrentTime()
            if stored:
                del self.running.live[live.session.id]
            else:
                self.running.keep(asyncio.create_task(self._store_later(writer)))
        live.publish()
        self._log_end(live)

    def _stand_down(
        self, live: LiveSession, fanout: FanOut, merging: "asyncio.Task[None] | None"
    ) -> None:
        """A write of the session was fenced (another replica claimed it when this one's
        lease lapsed): stops sending and merging, and the session leaves memory, so its
        watchers go on from the storage; its end is the new owner's to write."""
        fanout.stand_down()
        if merging is not None:
            merging.cancel()
        if self.running.live.get(live.session.id) is live:
            del self.running.live[live.session.id]
        live.stood_down = True
        live.publish()

    async def _store_later(self, writer: SessionWriter) -> None:
        try:
            await writer.store_end()
        finally:
            self.running.live.pop(writer.live.session.id, None)

    @staticmethod
    def _log_end(live: LiveSession) -> None:
        stats = live.session.statistics
        log.info(
            "session %s finished %s: %d received, %d not received, %d skipped, "
            "%d rejected, %d cancelled of %d; storage %.1f ms in %d writes",
            live.session.id,
            pb.SessionState.Name(live.session.state).removeprefix("SESSION_STATE_"),
            stats.received,
            stats.not_received,
            stats.skipped,
            stats.rejected,
            stats.cancelled,
            stats.total,
            live.storage_seconds * 1000,
            live.storage_writes,
            extra={"session_id": live.session.id},
        )
