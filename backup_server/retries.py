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
    if result.job_unknown:
        return True  # its agent stopped answering before the job's end was learned
    # A job still running has not failed (yet); a received start without a job has.
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


def retry_may_follow(policy: pb.BackupPolicy, latest: pb.PolicySession | None) -> bool:
    """Whether the latest session may call for a retry, by its header alone (no results
    needed): a finished start of a policy with attempts left that did not all succeed."""
    if latest is None or latest.action != pb.SESSION_ACTION_START:
        return False
    if not policy.HasField("retry") or policy.retry.attempts <= 0:
        return False
    if policy.HasField("schedule") and policy.schedule.paused:
        return False
    if latest.outcome in (
        pb.SESSION_STATE_UNSPECIFIED,
        pb.SESSION_STATE_RUNNING,
        pb.SESSION_STATE_SUCCESS,  # every targeted computer's job succeeded
    ):
        return False
    return latest.HasField("outcome_time") and latest.attempt < policy.retry.attempts


def retry_due(policy: pb.BackupPolicy, latest: pb.PolicySession) -> datetime:
    """When the retry `latest` calls for is due: `interval` after its outcome, in the window."""
    due = latest.outcome_time.ToDatetime(tzinfo=UTC) + policy.retry.interval.ToTimedelta()
    window = Window.of(policy)
    return window.opens_at_or_after(due) if window is not None else due


def plan_retry(policy: pb.BackupPolicy, latest: pb.PolicySession | None) -> RetryPlan | None:
    """The retry the policy's latest session (with its results) calls for, if any.

    Only the latest session counts: any newer session of the policy (an operator's start
    or stop, the next scheduled run, a window stop) supersedes a pending retry. The
    interval counts from the previous attempt's outcome_time; a retry that falls outside
    the window waits for it to open.
    """
    if latest is None or not retry_may_follow(policy, latest):
        return None
    names = unsuccessful_computers(latest)
    if not names:
        return None
    return RetryPlan(
        policy.id, original_of(latest), latest.attempt + 1, tuple(names), retry_due(policy, latest)
    )
