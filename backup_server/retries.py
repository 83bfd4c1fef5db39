"""Which computers of a start did not succeed, and when the policy tries them again.

Plain functions of stored sessions: the retry state is the sessions themselves (their
trigger, attempt, outcome and outcome time), so it survives a restart with them.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from backup.v1 import resources_pb2 as pb

from .schedule import Window

NOT_DELIVERED = frozenset({pb.DELIVERY_NOT_RECEIVED, pb.DELIVERY_REJECTED})


def did_not_succeed(result: pb.ComputerResult) -> bool:
    """Not received, rejected, or received with a job that failed, stopped or is unknown.

    Skipped computers are never started from the server; cancelled ones were cancelled
    by a stop, which is a newer session anyway.
    """
    if result.delivery in NOT_DELIVERED:
        return True
    if result.delivery != pb.DELIVERY_RECEIVED:
        return False
    # A job still running has not failed (yet); one whose end was never learned has.
    return result.job.state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_RUNNING)


def unsuccessful_computers(session: pb.PolicySession) -> list[str]:
    """The names of the computers of a finished start to try again, in session order."""
    return [r.computer.name for r in session.computer_results if did_not_succeed(r)]


def original_of(session: pb.PolicySession) -> str:
    """retry_of_session_id always names the first session of the chain."""
    return session.retry_of_session_id or session.id


@dataclass(frozen=True)
class RetryPlan:
    """The next automatic retry of a policy: which computers, which attempt, when."""

    policy_id: str
    retry_of_session_id: str
    attempt: int
    computer_names: tuple[str, ...]
    due: datetime


def plan_retry(policy: pb.BackupPolicy, latest: pb.PolicySession | None) -> RetryPlan | None:
    """The retry the policy's latest session calls for, if any.

    Only the latest session counts: any newer session of the policy (an operator's start
    or stop, the next scheduled run, a window stop) supersedes a pending retry. The
    interval counts from the previous attempt's outcome_time; a retry that falls outside
    the window waits for it to open.
    """
    if latest is None or latest.action != pb.SESSION_ACTION_START:
        return None
    if not policy.HasField("retry") or policy.retry.attempts <= 0:
        return None
    if policy.HasField("schedule") and policy.schedule.paused:
        return None
    if latest.outcome in (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING):
        return None
    if not latest.HasField("outcome_time") or latest.attempt >= policy.retry.attempts:
        return None
    names = unsuccessful_computers(latest)
    if not names:
        return None
    due = latest.outcome_time.ToDatetime(tzinfo=UTC) + policy.retry.interval.ToTimedelta()
    window = Window.of(policy)
    if window is not None:
        due = window.opens_at_or_after(due)
    return RetryPlan(policy.id, original_of(latest), latest.attempt + 1, tuple(names), due)
