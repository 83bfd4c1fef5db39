"""Notifications through Apprise: one message per session once its outcome is final.

Sending happens on one thread of its own behind a bounded queue, so a notifier that is
slow or down never holds the event loop, a fan-out or a following: when the queue is
full, the message is dropped and logged. Apprise retries a failing service itself
(`RETRIES` times); what still fails is logged and never stops anything. Notification
URLs carry secrets (passwords, webhook tokens), so logs only ever show Apprise's
privacy form of a URL, with the secrets masked.
"""

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC

import apprise

from backup.metrics import enum_labels
from backup.v1 import resources_pb2 as pb

from .retries import plan_retry, unsuccessful_computers

log = logging.getLogger("backup_server.notify")

NOTIFY_ON = ("failure", "warning", "always")
# Which outcomes each --notify-on choice sends.
OUTCOMES_SENT = {
    "failure": frozenset({"failed"}),
    "warning": frozenset({"failed", "warning"}),
    "always": frozenset({"failed", "warning", "success"}),
}
QUEUE_LIMIT = 100
COMPUTERS_LISTED = 20
RETRIES = 2
# Per-service network timeout Apprise applies, so a hung service cannot hold the thread long.
SERVICE_TIMEOUT = 15

OUTCOME = enum_labels(pb.SessionState)
ACTION = enum_labels(pb.SessionAction)
DELIVERY = enum_labels(pb.Delivery)
NOTIFY_TYPE = {
    "failed": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "success": apprise.NotifyType.SUCCESS,
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    outcome: str


def outcome_of(session: pb.PolicySession) -> str:
    """The session's final outcome as a label; its delivery state where no outcome is kept."""
    if session.outcome not in (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING):
        return OUTCOME[session.outcome]
    return OUTCOME[session.state]


def trigger_of(session: pb.PolicySession) -> str:
    """What started the session, as a label; "operator" for sessions stored before
    sessions recorded a trigger (UNSPECIFIED)."""
    if session.trigger == pb.SESSION_TRIGGER_UNSPECIFIED:
        return "operator"
    return pb.SessionTrigger.Name(session.trigger).removeprefix("SESSION_TRIGGER_").lower()


def problems_of(result: pb.ComputerResult) -> str:
    """Why this computer is named in a message, or "" when it did its part."""
    if result.delivery in (pb.DELIVERY_NOT_RECEIVED, pb.DELIVERY_REJECTED):
        return f"{DELIVERY[result.delivery].replace('_', ' ')} ({result.detail})"
    if result.HasField("job") and result.job.state == pb.JOB_STATE_FAILED:
        return f"job {result.job.id} failed: {result.job.error}"
    return ""


GAVE_UP = "retries exhausted"


def retry_note(policy: pb.BackupPolicy | None, session: pb.PolicySession) -> str:
    """What the policy's retries do after this final start: the next attempt and when, or
    that the chain gave up; "" when nothing is left to retry or the policy has no retries.

    The same `plan_retry` the scheduler follows, so the message says what will happen.
    """
    if policy is None or session.action != pb.SESSION_ACTION_START:
        return ""
    attempts = policy.retry.attempts if policy.HasField("retry") else 0
    left = len(unsuccessful_computers(session))
    if attempts <= 0 or not left:
        return ""
    plan = plan_retry(policy, session)
    if plan is not None:
        due = plan.due.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"retry follows: attempt {plan.attempt} of {attempts} at {due} "
            f"for {len(plan.computer_names)} computers"
        )
    if session.attempt >= attempts:
        return (
            f"{GAVE_UP}: attempt {session.attempt} of {attempts}; "
            f"{left} computers still did not succeed"
        )
    if policy.HasField("schedule") and policy.schedule.paused:
        return "no retry follows: the policy's schedule is paused"
    return ""


def session_message(session: pb.PolicySession, retry: str = "") -> Message:
    """Policy, trigger, outcome, counts, and the computers that did not do their part;
    `retry` (from `retry_note`) says what the policy's retries do next."""
    outcome = outcome_of(session)
    action = ACTION[session.action]
    stats = session.statistics
    lines = [
        f"policy: {session.policy_id}",
        f"session: {session.id} ({action}, trigger {trigger_of(session)})",
        f"outcome: {outcome}",
        *([retry] if retry else []),
        f"computers: {stats.total} total, {stats.received} received, "
        f"{stats.not_received} not received, {stats.rejected} rejected, "
        f"{stats.skipped} skipped, {stats.cancelled} cancelled",
    ]
    if session.HasField("outcome_time"):
        lines.append(
            f"jobs: {stats.jobs_succeeded} succeeded, {stats.jobs_failed} failed, "
            f"{stats.jobs_stopped} stopped, {stats.jobs_unknown} unknown"
        )
    listed: list[str] = []
    more = 0
    for result in session.computer_results:
        problem = problems_of(result)
        if not problem:
            continue
        if len(listed) < COMPUTERS_LISTED:
            listed.append(f"- {result.computer.name} ({result.computer.address}): {problem}")
        else:
            more += 1
    if listed:
        lines.append("computers that did not receive it or whose job failed:")
        lines.extend(listed)
        if more:
            lines.append(f"... and {more} more")
    lines.extend(f"warning: {warning}" for warning in session.warnings[:COMPUTERS_LISTED])
    title = f"backup {action} of policy {session.policy_id}: {outcome.upper()}"
    if retry.startswith(GAVE_UP):
        title += f" ({GAVE_UP})"
    return Message(title, "\n".join(lines), outcome)


class Notifier:
    """Sends messages to every --notify URL from one background thread."""

    def __init__(self, urls: list[str], notify_on: str = "warning") -> None:
        if notify_on not in OUTCOMES_SENT:
            raise SystemExit(f"--notify-on {notify_on}: expected one of {', '.join(NOTIFY_ON)}")
        self._sent = OUTCOMES_SENT[notify_on]
        asset = apprise.AppriseAsset(
            storage_mode="memory", service_timeout=SERVICE_TIMEOUT, secure_logging=True
        )
        asset.default_service_retry = RETRIES
        # Each service, its URL as logs show it (secrets masked, options left out), and
        # how many times Apprise retries it (?retry=N in the URL overrides the default).
        self._services: list[tuple[apprise.Apprise, str, int]] = []
        for position, url in enumerate(urls, 1):
            service = apprise.Apprise(asset=asset)
            if not service.add(url):
                scheme = url.partition("://")[0] if "://" in url else "(none)"
                raise SystemExit(
                    f"--notify #{position} (scheme {scheme}): not a notification URL Apprise "
                    "understands (https://github.com/caronc/apprise/wiki)"
                )
            plugin = service[0]
            shown = plugin.url(privacy=True).partition("?")[0]
            self._services.append((service, shown, plugin.retry))
        self._queue: queue.Queue[Message | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None

    @property
    def targets(self) -> list[str]:
        """The URLs with their secrets masked, for the start-up log."""
        return [shown for _, shown, _ in self._services]

    def wants(self, outcome: str) -> bool:
        return outcome in self._sent

    def start(self) -> None:
        self._thread = threading.Thread(target=self._send_all, name="notify", daemon=True)
        self._thread.start()

    def submit(self, message: Message) -> bool:
        """Queues the message without waiting; False (and a log line) when the queue is full."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.warning("notification dropped, %d already waiting: %s", QUEUE_LIMIT, message.title)
            return False
        return True

    def stop(self, grace: float) -> None:
        """Sends what is queued for up to `grace` seconds; the thread never blocks exit."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=grace)
        except queue.Full:
            return
        self._thread.join(grace)
        self._thread = None

    def _send_all(self) -> None:
        while (message := self._queue.get()) is not None:
            for service, shown, retries in self._services:
                self._send(service, shown, retries, message)

    def _send(self, service: apprise.Apprise, shown: str, retries: int, message: Message) -> None:
        try:
            sent = bool(
                service.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=NOTIFY_TYPE.get(message.outcome, apprise.NotifyType.INFO),
                )
            )
        except Exception as error:  # noqa: BLE001 - a notifier's bug must never stop the server
            log.warning("notification to %s failed: %s", shown, type(error).__name__)
            return
        if sent:
            log.info("notification sent to %s: %s", shown, message.title)
        else:
            log.warning(
                "notification to %s failed after %d retries: %s", shown, retries, message.title
            )
