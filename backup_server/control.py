"""Starting and stopping policies across their computers, and the sessions that record it."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection

from google.protobuf.message import DecodeError

from backup import paging, validation
from backup.errors import FailedPrecondition, NotFound
from backup.ids import new_session_id
from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from .database import Database
from .fanout import AgentTransport, FanOut
from .monitoring import NoObserver, SessionObserver
from .sessions import LiveSession, Progress, new_session, resolve_targets

log = logging.getLogger("backup_server.control")

LIST_DEFAULT = 50
LIST_LIMIT = 1000
LIST_LIMIT_FULL = 10
PROGRESS_INTERVAL = 0.25


def agent_policy(policy: pb.BackupPolicy) -> pb.BackupPolicy:
    """The policy as an agent needs it: never the computer list (DESIGN.md)."""
    view = pb.BackupPolicy(
        id=policy.id,
        name=policy.name,
        source_paths=policy.source_paths,
        repository=policy.repository,
        retention_points=policy.retention_points,
        throttle_bytes_per_second=policy.throttle_bytes_per_second,
    )
    view.update_time.CopyFrom(policy.update_time)
    return view


def read_start_reply(reply: bytes) -> tuple[str, str]:
    try:
        answer = agent_pb.StartJobResponse.FromString(reply)
    except DecodeError:
        return "", "the agent's reply could not be read"
    if answer.already_running:
        return answer.job.id, f"already running as job {answer.job.id}"
    return answer.job.id, f"job {answer.job.id} started"


def read_stop_reply(reply: bytes) -> tuple[str, str]:
    try:
        answer = agent_pb.StopJobResponse.FromString(reply)
    except DecodeError:
        return "", "the agent's reply could not be read"
    if answer.was_running:
        return answer.job.id, f"job {answer.job.id} stopped"
    return "", "no job was running"


class Control:
    """Runs start and stop sessions and answers for them while they run and after."""

    def __init__(
        self,
        database: Database,
        transport: AgentTransport,
        deadline: float,
        max_in_flight: int = 10_000,
        check_capacity: Callable[[Collection[str]], None] | None = None,
        observer: SessionObserver | None = None,
    ) -> None:
        self._db = database
        self._storage = database.storage
        self._transport = transport
        self._deadline = deadline
        self._max_in_flight = max_in_flight
        # Raises FailedPrecondition when this process cannot connect to that many agents.
        self._check_capacity = check_capacity
        self._observer = observer or NoObserver()
        self._live: dict[str, LiveSession] = {}
        self._starts: dict[str, set[FanOut]] = {}
        self._runs: set[asyncio.Task[pb.PolicySession]] = set()

    async def recover(self) -> list[str]:
        """Marks sessions a crash left RUNNING as FAILED, with a warning; returns their ids."""
        interrupted = await self._db.run(self._storage.fail_interrupted_sessions, time.time_ns())
        for session_id in interrupted:
            log.warning(
                "session %s was running when the server stopped: marked FAILED (interrupted)",
                session_id,
                extra={"session_id": session_id},
            )
        return interrupted

    async def start_policy(self, policy_id: str, session_id: str = "") -> pb.PolicySession:
        validation.require_id("policy_id", policy_id)
        validation.optional_id("session_id", session_id)
        return await self._run(policy_id, pb.SESSION_ACTION_START, session_id)

    async def stop_policy(self, policy_id: str, session_id: str = "") -> pb.PolicySession:
        validation.require_id("policy_id", policy_id)
        validation.optional_id("session_id", session_id)
        return await self._run(policy_id, pb.SESSION_ACTION_STOP, session_id)

    async def _run(
        self, policy_id: str, action: pb.SessionAction, session_id: str
    ) -> pb.PolicySession:
        policy, groups = await self._db.run(self._storage.get_policy_and_groups, policy_id)
        targets = resolve_targets(policy, groups)
        if not targets:
            raise FailedPrecondition(f"policy {policy_id!r} has no computers to send to")
        if self._check_capacity is not None:
            self._check_capacity(
                [target.computer.address for target in targets if not target.skipped_because]
            )
        session = new_session(session_id or new_session_id(), policy_id, action, targets)
        if action == pb.SESSION_ACTION_STOP:
            request = agent_pb.StopJobRequest(session_id=session.id, policy_id=policy_id)
            fanout_args = ("StopJob", request.SerializeToString(), read_stop_reply)
        else:
            request_start = agent_pb.StartJobRequest(
                session_id=session.id, policy=agent_policy(policy)
            )
            fanout_args = ("StartJob", request_start.SerializeToString(), read_start_reply)
        seq, took = await self._db.run_timed(self._storage.insert_session, session)
        if action == pb.SESSION_ACTION_STOP:
            # After the insert, so a stop refused for a taken session id cancels nothing.
            self._cancel_queued_starts(policy_id, session.id)
        live = LiveSession(session, seq)
        live.storage_seconds, live.storage_writes = took, 1
        # Registered before any await, so a watcher never finds it stored but not live.
        self._live[session.id] = live
        # A stop follows the commands a running start of the policy has on the wire.
        follow = list(self._starts.get(policy_id, ())) if action == pb.SESSION_ACTION_STOP else []
        fanout = FanOut(
            live, self._transport, *fanout_args, self._deadline, self._max_in_flight, follow
        )
        if action == pb.SESSION_ACTION_START:
            self._starts.setdefault(policy_id, set()).add(fanout)
        log.info(
            "session %s: %s policy %s on %d computers (%d skipped)",
            session.id,
            pb.SessionAction.Name(action).removeprefix("SESSION_ACTION_").lower(),
            policy_id,
            session.statistics.pending,
            session.statistics.skipped,
            extra={"session_id": session.id},
        )
        # The fan-out is not tied to the caller's RPC: a client that hangs up does not
        # stop commands half-way, and shutdown finishes or cancels it explicitly.
        run = asyncio.create_task(self._deliver(live, fanout, policy_id, action))
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)
        return await asyncio.shield(run)

    def _cancel_queued_starts(self, policy_id: str, stop_session_id: str) -> None:
        for fanout in self._starts.get(policy_id, set()):
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

    async def _deliver(
        self, live: LiveSession, fanout: FanOut, policy_id: str, action: pb.SessionAction
    ) -> pb.PolicySession:
        session_id = live.session.id
        writer = asyncio.create_task(self._write_progress(live))
        try:
            await fanout.run()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if action == pb.SESSION_ACTION_START:
                self._starts[policy_id].discard(fanout)
                if not self._starts[policy_id]:
                    del self._starts[policy_id]
            live.finish()
            await self._save_progress(live, live.take_progress())
            live.publish()
            del self._live[session_id]
            self._observer.session_delivered(live.session)
            stats = live.session.statistics
            log.info(
                "session %s finished %s: %d received, %d not received, %d skipped, "
                "%d rejected, %d cancelled of %d; storage %.1f ms in %d writes",
                session_id,
                pb.SessionState.Name(live.session.state).removeprefix("SESSION_STATE_"),
                stats.received,
                stats.not_received,
                stats.skipped,
                stats.rejected,
                stats.cancelled,
                stats.total,
                live.storage_seconds * 1000,
                live.storage_writes,
                extra={"session_id": session_id},
            )
        return live.session

    async def _write_progress(self, live: LiveSession) -> None:
        """Every interval: one storage transaction for the outcomes so far, then wake watchers."""
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            if live.dirty:
                # Shielded: the batch has left `live.dirty`, so it must reach the file even
                # if the fan-out ends now and cancels this writer; the final write queues
                # behind it on the storage thread.
                await asyncio.shield(self._save_progress(live, live.take_progress()))
                live.publish()

    async def _save_progress(self, live: LiveSession, progress: Progress) -> None:
        _, took = await self._db.run_timed(self._storage.save_progress, progress)
        live.storage_seconds += took
        live.storage_writes += 1

    async def get_session(self, session_id: str) -> pb.PolicySession:
        validation.require_id("session_id", session_id)
        live = self._live.get(session_id)
        if live is not None:
            return live.snapshot()
        return await self._db.run(self._storage.get_session, session_id)

    async def list_sessions(
        self, policy_id: str, page_size: int, page_token: str, view: api.SessionView
    ) -> tuple[list[pb.PolicySession], str]:
        if validation.optional_id("policy_id", policy_id):
            known = await self._db.run(self._storage.policy_exists_or_had_sessions, policy_id)
            if not known:
                raise NotFound(f"policy {policy_id!r} not found")
        full = view == api.SESSION_VIEW_FULL
        limit = LIST_LIMIT_FULL if full else LIST_LIMIT
        size = validation.page_size(page_size, min(LIST_DEFAULT, limit), limit)
        query = f"sessions:{policy_id}:{int(full)}"
        before = paging.decode(page_token, query, int) or 0
        rows = await self._db.run(self._storage.list_sessions, policy_id, before, size + 1, full)
        sessions = [self._latest(session, full) for _, session in rows[:size]]
        token = paging.encode(query, rows[size - 1][0]) if len(rows) > size else ""
        return sessions, token

    def _latest(self, stored: pb.PolicySession, full: bool) -> pb.PolicySession:
        """A running session as it is in memory now, not as last written."""
        live = self._live.get(stored.id)
        if live is None:
            return stored
        current = live.snapshot()
        if not full:
            del current.computer_results[:]
        return current

    async def watch_session(self, session_id: str) -> AsyncIterator[pb.PolicySession]:
        validation.require_id("session_id", session_id)
        live = self._live.get(session_id)
        if live is None:
            stored = await self._db.run(self._storage.get_session, session_id)
            live = self._live.get(session_id)
            if live is None:
                yield stored
                return
        while True:
            change = live.next_change()
            finished = live.finished
            yield live.snapshot()
            if finished:
                return
            await change.wait()

    async def shutdown(self, grace: float) -> None:
        """Lets running sessions finish for `grace` seconds, then cancels what remains."""
        if not self._runs:
            return
        log.info("waiting up to %.1f s for %d running sessions", grace, len(self._runs))
        _, unfinished = await asyncio.wait(set(self._runs), timeout=grace)
        for run in unfinished:
            run.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
