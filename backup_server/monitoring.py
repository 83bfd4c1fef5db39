"""What the server tells Prometheus and the notifiers about its sessions.

`Control` is handed a `SessionObserver` at construction and calls it once per session,
when the session's delivery has finished; where jobs are followed, `follow_outcomes`
hooks the outcome's becoming final (and later corrections) for the rest. Metric label
values are the lower-case enum suffixes; only
`backup_computer_last_success_timestamp_seconds` has a series per computer, so a fleet
of 10,000 stays within what one Prometheus handles.
"""

import logging
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backup.metrics import enum_labels
from backup.v1 import resources_pb2 as pb

from .notify import Notifier, outcome_of, session_message, trigger_of

log = logging.getLogger("backup_server.monitoring")

ACTION = enum_labels(pb.SessionAction)
DELIVERY = enum_labels(pb.Delivery)
JOB_STATE = enum_labels(pb.JobState)
ENDED_JOBS = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_STOPPED)
JOB_STATISTICS = ("running", "succeeded", "failed", "stopped", "unknown")
OUTCOME = enum_labels(pb.SessionState)
FINAL_OUTCOMES = ("success", "warning", "failed")
# Delivery of one session: from about a millisecond (a few live agents) to the deadline
# several times over (a fleet larger than --max-in-flight).
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Each delivery a finished session can record (its statistics field has the same name).
DELIVERY_STATISTICS = tuple(
    name
    for number, name in DELIVERY.items()
    if number not in (pb.DELIVERY_UNSPECIFIED, pb.DELIVERY_PENDING)
)


class SessionObserver(Protocol):
    """Told about each session by `Control`."""

    def session_delivered(self, session: pb.PolicySession) -> None:
        """The session's delivery has finished: every computer has its delivery."""
        ...


class OutcomeSource(Protocol):
    """Where outcomes become final: the sessions whose jobs the server follows."""

    def add_outcome_hook(self, hook: Callable[[pb.PolicySession, bool], None]) -> None: ...

    @property
    def followed_jobs(self) -> int: ...


class NoObserver:
    """Observes nothing: the server without metrics or notifications."""

    def session_delivered(self, session: pb.PolicySession) -> None:
        pass


class ServerMonitoring:
    """The server's metric families, fed by its sessions, and the notifications they send."""

    def __init__(self, registry: CollectorRegistry, notifier: Notifier | None = None) -> None:
        self.notifier = notifier
        # Until `follow_outcomes`, a session's outcome is final when its delivery is.
        self._outcomes_followed = False
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
        for delivery in DELIVERY_STATISTICS:
            count = getattr(stats, delivery)
            self.deliveries.labels(policy, action, delivery).inc(count)
            self.last_deliveries.labels(policy, action, delivery).set(count)
        took = session.end_time.ToNanoseconds() - session.start_time.ToNanoseconds()
        self.delivery_seconds.labels(action).observe(max(took, 0) / 1e9)
        if not self._outcomes_followed:
            self.session_final(session)

    def follow_outcomes(self, source: OutcomeSource) -> None:
        """Outcomes come from following jobs: counted and notified when they are final."""
        self._outcomes_followed = True
        source.add_outcome_hook(self.outcome_final)
        self.jobs_followed.set_function(lambda: source.followed_jobs)

    def outcome_final(self, session: pb.PolicySession, corrected: bool) -> None:
        """The outcome became final, or (`corrected`) was corrected from an agent's answer
        later: the session is counted and notified once, job series follow each change."""
        policy, action = session.policy_id, ACTION[session.action]
        stats = session.statistics
        for state in JOB_STATISTICS:
            self.last_jobs.labels(policy, action, state).set(getattr(stats, f"jobs_{state}"))
        for result in session.computer_results:
            job = result.job
            if job.state == pb.JOB_STATE_SUCCEEDED and job.HasField("end_time"):
                self.last_success.labels(policy, result.computer.name).set(
                    job.end_time.ToNanoseconds() / 1e9
                )
            if not corrected and job.state in ENDED_JOBS:
                self.jobs_finished.labels(policy, JOB_STATE[job.state]).inc()
        if not corrected:
            self.session_final(session)

    def session_final(self, session: pb.PolicySession) -> None:
        """The session's outcome is final: count it, and notify when --notify-on says so."""
        policy, action, outcome = session.policy_id, ACTION[session.action], outcome_of(session)
        self.sessions.labels(policy, action, trigger_of(session), outcome).inc()
        for each in FINAL_OUTCOMES:
            self.last_outcome.labels(policy, action, each).set(int(each == outcome))
        if self.notifier is not None and self.notifier.wants(outcome):
            self.notifier.submit(session_message(session))
