"""What the server tells Prometheus and the notifiers about its sessions.

`Control` is handed a `SessionObserver` at construction and calls it once per session,
when the session's delivery has finished (deliveries are counted then). The outcome
becomes final later, once every job is followed to its end: `follow` hooks
`session_final` where that happens (`FollowedSessions.add_outcome_hook`), which counts
the session, its jobs and each computer's last success, and sends the notification. A
server without following (a test transport without streams) finalises at delivery.

Messages go through an outbox in session order: a start whose computers did not all
succeed waits for its policy to be read, so that its message says what the policy's
retries do next (a retry follows, or the chain gave up). `start` begins sending and
reloads, in the background, the gauges that stored state gives (monitoring_restore.py),
so a restarted server does not report "no success" for every computer.

Metric label values are the lower-case enum suffixes (API.md); only
`backup_computer_last_success_timestamp_seconds` has a series per computer, so a fleet of
10,000 stays within what one Prometheus handles.
"""

import asyncio
import logging
from collections import OrderedDict
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backup.errors import BackupError, NotFound
from backup.metrics import enum_labels
from backup.v1 import resources_pb2 as pb
from backup.waits import finished_within

from .followed import FollowedSessions
from .monitoring_restore import restore_stored_gauges
from .notify import (
    ACTION,
    DELIVERY,
    Notifier,
    outcome_of,
    retry_note,
    session_message,
    trigger_of,
)
from .retries import unsuccessful_computers
from .storage.interface import Storage

log = logging.getLogger("backup_server.monitoring")

FINAL_OUTCOMES = ("success", "warning", "failed")
JOB = enum_labels(pb.JobState)
# The session statistics of each job state: `backup_last_session_jobs{state}`.
JOB_STATISTICS = {
    "running": "jobs_running",
    "succeeded": "jobs_succeeded",
    "failed": "jobs_failed",
    "stopped": "jobs_stopped",
    "unknown": "jobs_unknown",
}
FINISHED_STATE = {
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "stopped": pb.JOB_STATE_STOPPED,
}
FINISHED = tuple(FINISHED_STATE)
# Sessions whose finished jobs are remembered, so an outcome corrected later (an agent
# that answered late) counts only the jobs whose end it adds.
SESSIONS_REMEMBERED = 10_000
# Delivery of one session: from about a millisecond (a few live agents) to the deadline
# several times over (a fleet larger than --max-in-flight).
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Each delivery a finished session can record (its statistics field has the same name).
DELIVERY_STATISTICS = tuple(
    name
    for number, name in DELIVERY.items()
    if number not in (pb.DELIVERY_UNSPECIFIED, pb.DELIVERY_PENDING)
)
# Final sessions waiting for their message; past this many (a storage that stopped
# answering) a message is dropped and logged, as the notifier's own queue does.
OUTBOX_LIMIT = 1000


def counted_jobs(session: pb.PolicySession) -> tuple[int, ...]:
    """The session's ended jobs by FINISHED state, as its header counts them."""
    return tuple(getattr(session.statistics, JOB_STATISTICS[state]) for state in FINISHED)


def jobs_it_finished(session: pb.PolicySession) -> tuple[int, ...]:
    """The session's ended jobs by FINISHED state, counting only the jobs it started (or
    that no session started): a job it found already running (a retry, or a start while
    the last one runs) is the starting session's, and counted there once."""
    ended = [
        result.job.state
        for result in session.computer_results
        if result.job.id and not result.job_unknown and result.job.session_id in (session.id, "")
    ]
    return tuple(ended.count(job_state) for job_state in FINISHED_STATE.values())


class SessionObserver(Protocol):
    """Told about each session by `Control`."""

    def session_delivered(self, session: pb.PolicySession) -> None:
        """The session's delivery has finished: every computer has its delivery."""
        ...


class NoObserver:
    """Observes nothing: the server without metrics or notifications."""

    def session_delivered(self, session: pb.PolicySession) -> None:
        pass


class ServerMonitoring:
    """The server's metric families, fed by its sessions, and the notifications they send."""

    def __init__(self, registry: CollectorRegistry, notifier: Notifier | None = None) -> None:
        self.notifier = notifier
        self._following = False
        self._finished: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        # Sessions whose finished jobs are counted from the header (`_correcting`).
        self._by_header: dict[str, None] = {}
        self._last_success: dict[tuple[str, str], int] = {}
        # (policy, action) whose last-session gauges this process set from a live session:
        # what storage gives at start-up is older and must not replace them.
        self._outcome_set: set[tuple[str, str]] = set()
        self._deliveries_set: set[tuple[str, str]] = set()
        self._outbox: asyncio.Queue[pb.PolicySession] = asyncio.Queue(OUTBOX_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self.sessions = Counter(
            "backup_sessions_total",
            "Sessions whose outcome became final.",
            ["policy", "action", "trigger", "outcome"],
            registry=registry,
        )
        self.deliveries = Counter(
            "backup_deliveries_total",
            "Commands to computers, by how each delivery ended.",
            ["policy", "action", "delivery"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "backup_session_delivery_seconds",
            "Time from a session's start until every computer had its delivery.",
            ["action"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.last_outcome = Gauge(
            "backup_last_session_outcome",
            "1 for the outcome of the policy's last final session, 0 for the others.",
            ["policy", "action", "outcome"],
            registry=registry,
        )
        self.last_deliveries = Gauge(
            "backup_last_session_deliveries",
            "Computers of the policy's last session, by delivery.",
            ["policy", "action", "delivery"],
            registry=registry,
        )
        # Fed by following jobs to their end (job outcomes).
        self.last_jobs = Gauge(
            "backup_last_session_jobs",
            "Jobs of the policy's last final session, by how they ended (unknown: agent lost).",
            ["policy", "action", "state"],
            registry=registry,
        )
        self.jobs_finished = Counter(
            "backup_jobs_finished_total",
            "Jobs the server followed to their end, by how they ended.",
            ["policy", "state"],
            registry=registry,
        )
        self.jobs_followed = Gauge(
            "backup_jobs_followed", "Jobs the server is following now.", registry=registry
        )
        self.last_success = Gauge(
            "backup_computer_last_success_timestamp_seconds",
            "When the last job the server followed to success on this computer ended.",
            ["policy", "computer"],
            registry=registry,
        )

    def session_delivered(self, session: pb.PolicySession) -> None:
        policy, action = session.policy_id, ACTION[session.action]
        stats = session.statistics
        self._deliveries_set.add((policy, action))
        for delivery in DELIVERY_STATISTICS:
            count = getattr(stats, delivery)
            self.deliveries.labels(policy, action, delivery).inc(count)
            self.last_deliveries.labels(policy, action, delivery).set(count)
        took = session.end_time.ToNanoseconds() - session.start_time.ToNanoseconds()
        self.delivery_seconds.labels(action).observe(max(took, 0) / 1e9)
        if not self._following:
            self.session_final(session)

    def follow(self, followed: FollowedSessions) -> None:
        """Outcomes become final where `followed` settles them; the followed-jobs gauge."""
        self._following = True
        followed.add_outcome_hook(self.session_final)
        if followed.shares is not None:
            followed.shares.before_correction.append(self._correcting)
        self.jobs_followed.set_function(lambda: followed.followed_jobs)

    def session_final(self, session: pb.PolicySession, corrected: bool = False) -> None:
        """The session's outcome is final (or `corrected` later): count it, its jobs and
        each computer's last success; notify the first time, when --notify-on says so."""
        policy, action, outcome = session.policy_id, ACTION[session.action], outcome_of(session)
        if not corrected:
            self.sessions.labels(policy, action, trigger_of(session), outcome).inc()
        self._outcome_set.add((policy, action))
        self._deliveries_set.add((policy, action))
        self._last_session(session)
        if session.HasField("outcome_time"):
            self._jobs_ended(session)
        if not corrected and self.notifier is not None and self.notifier.wants(outcome):
            self._queue_message(session)

    def _last_session(self, session: pb.PolicySession, deliveries: bool = True) -> None:
        """The policy's last-session gauges from this final session."""
        policy, action, outcome = session.policy_id, ACTION[session.action], outcome_of(session)
        for each in FINAL_OUTCOMES:
            self.last_outcome.labels(policy, action, each).set(int(each == outcome))
        stats = session.statistics
        if deliveries:
            for delivery in DELIVERY_STATISTICS:
                # Reconciliation may have moved computers from not received to received.
                count = getattr(stats, delivery)
                self.last_deliveries.labels(policy, action, delivery).set(count)
        if session.HasField("outcome_time"):
            for state, field in JOB_STATISTICS.items():
                self.last_jobs.labels(policy, action, state).set(getattr(stats, field))

    def restore_last_session(self, session: pb.PolicySession) -> None:
        """A stored final session, at start-up: sets what no live session has set since."""
        key = (session.policy_id, ACTION[session.action])
        if key not in self._outcome_set:
            self._last_session(session, deliveries=key not in self._deliveries_set)

    def restore_last_success(self, policy: str, computer: str, ended_ns: int) -> None:
        """A stored computer status's last success, at start-up (never moves it back)."""
        self._succeeded(policy, computer, ended_ns)

    def start(self, storage: Storage) -> None:
        """Begins sending queued messages, and reloads the stored gauges in the background."""
        self._tasks.append(asyncio.create_task(restore_stored_gauges(storage, self)))
        if self.notifier is not None:
            self._tasks.append(asyncio.create_task(self._send_messages(storage)))

    async def close(self, grace: float) -> None:
        """Hands what is queued to the notifier (for up to `grace` s), then stops both."""
        if self._tasks and self.notifier is not None:
            await finished_within(self._outbox.join(), grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.notifier is not None:
            await asyncio.to_thread(self.notifier.stop, grace)

    def _queue_message(self, session: pb.PolicySession) -> None:
        # A copy: the live session goes on changing (a late correction) after this.
        final = pb.PolicySession()
        final.CopyFrom(session)
        try:
            self._outbox.put_nowait(final)
        except asyncio.QueueFull:
            log.warning("notification dropped, %d sessions waiting: %s", OUTBOX_LIMIT, session.id)

    async def _send_messages(self, storage: Storage) -> None:
        assert self.notifier is not None
        while True:
            session = await self._outbox.get()
            note = ""
            try:
                if session.action == pb.SESSION_ACTION_START and unsuccessful_computers(session):
                    note = retry_note(await self._policy(storage, session.policy_id), session)
            except Exception:  # noqa: BLE001 - the message goes without the note, never lost
                log.exception("session %s: what its retries do next is left out", session.id)
            finally:
                self._outbox.task_done()
            self.notifier.submit(session_message(session, note))

    @staticmethod
    async def _policy(storage: Storage, policy_id: str) -> pb.BackupPolicy | None:
        try:
            return await storage.get_policy(policy_id)
        except NotFound:
            return None  # deleted since: nothing will retry it
        except BackupError as error:
            log.warning(
                "policy %s: cannot read its retries for a message: %s", policy_id, error.message
            )
            return None

    def _correcting(self, before: pb.PolicySession) -> None:
        """A correction the storage recounted counts only the jobs it adds: from the stored
        header before it (`before`), which other replicas' corrections may have moved
        since this process last saw the session, or which it never saw (settled on
        another replica)."""
        self._finished[before.id] = counted_jobs(before)
        # The stored header counts every job the session followed (its results are not
        # read with it), so this session's ends are counted the same way from here on.
        self._by_header[before.id] = None

    def _jobs_ended(self, session: pb.PolicySession) -> None:
        policy = session.policy_id
        if session.action != pb.SESSION_ACTION_START:
            return  # a stop session's job is the start's job, counted there
        by_header = session.id in self._by_header
        finished = counted_jobs(session) if by_header else jobs_it_finished(session)
        before = self._finished.pop(session.id, (0,) * len(FINISHED))
        for state, had, has in zip(FINISHED, before, finished, strict=True):
            if has > had:
                self.jobs_finished.labels(policy, state).inc(has - had)
        self._finished[session.id] = finished
        if len(self._finished) > SESSIONS_REMEMBERED:
            forgotten, _ = self._finished.popitem(last=False)
            self._by_header.pop(forgotten, None)
        for result in session.computer_results:
            if result.job.state == pb.JOB_STATE_SUCCEEDED:
                self._succeeded(policy, result.computer.name, result.job.end_time.ToNanoseconds())

    def _succeeded(self, policy: str, computer: str, ended_ns: int) -> None:
        key = (policy, computer)
        # A late correction of an older session must not move the last success back.
        if ended_ns > self._last_success.get(key, 0):
            self._last_success[key] = ended_ns
            self.last_success.labels(policy, computer).set(ended_ns / 1e9)
