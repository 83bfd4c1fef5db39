"""A session's outcome, from each computer's delivery and job (DESIGN rule 4).

`state` stays the delivery state; `outcome` says whether the jobs did what the session
asked. The rules, exactly as clients may rely on them:

- start: SUCCESS when every targeted (non-skipped) computer ended with a SUCCEEDED job;
  FAILED when none succeeded and none was stopped (all failed, unknown, rejected or not
  received); WARNING otherwise (a start stopped by an operator or a window, a command
  cancelled by a stop, is a warning, not a failure).
- stop: SUCCESS when every targeted computer received it and no job it stopped still
  runs; FAILED when none received it; WARNING otherwise.
- RUNNING while a delivery is pending, a followed job still runs (and is not unknown), or
  a computer awaits reconciliation (its command timed out; the agent is being asked).

Pure functions over the session proto: no I/O (`recounted` alone reads the clock, for
the outcome time of a correction).
"""

import time
from collections.abc import Collection
from dataclasses import dataclass

from backup.v1 import resources_pb2 as pb

from .sessions import recount

JOB_STATISTIC = {
    pb.JOB_STATE_RUNNING: "jobs_running",
    pb.JOB_STATE_SUCCEEDED: "jobs_succeeded",
    pb.JOB_STATE_FAILED: "jobs_failed",
    pb.JOB_STATE_STOPPED: "jobs_stopped",
}
JOB_STATISTICS = (*JOB_STATISTIC.values(), "jobs_unknown")
RECONCILED_WARNING = "reconciled: "


def job_running(result: pb.ComputerResult) -> bool:
    """A job the session still follows: seen running, its agent not (yet) lost."""
    return (
        bool(result.job.id)
        and result.job.state == pb.JOB_STATE_RUNNING
        and not (result.job_unknown)
    )


def count_jobs(session: pb.PolicySession) -> None:
    """Sets the jobs_* statistics from the computers' jobs."""
    counts = dict.fromkeys(JOB_STATISTICS, 0)
    for result in session.computer_results:
        if not result.job.id:
            continue
        if result.job_unknown:
            counts["jobs_unknown"] += 1
        elif result.job.state in JOB_STATISTIC:
            counts[JOB_STATISTIC[result.job.state]] += 1
    for name, count in counts.items():
        setattr(session.statistics, name, count)


def outcome_of(session: pb.PolicySession, awaiting: Collection[int] = ()) -> pb.SessionState:
    """The outcome by the rules above; `awaiting` are positions still being reconciled."""
    results = session.computer_results
    # A pending delivery holds the outcome only while delivery runs: an interrupted
    # session's computers without a delivery never got the command.
    delivering = session.state == pb.SESSION_STATE_RUNNING
    if awaiting or any(
        (delivering and result.delivery == pb.DELIVERY_PENDING) or job_running(result)
        for result in results
    ):
        return pb.SESSION_STATE_RUNNING
    targeted = [result for result in results if result.delivery != pb.DELIVERY_SKIPPED]
    if not targeted:
        return pb.SESSION_STATE_WARNING
    if session.action == pb.SESSION_ACTION_STOP:
        return _stop_outcome(targeted)
    return _start_outcome(targeted)


def _ended(result: pb.ComputerResult, state: pb.JobState) -> bool:
    return result.job.state == state and not result.job_unknown


def _start_outcome(targeted: list[pb.ComputerResult]) -> pb.SessionState:
    succeeded = sum(
        1
        for result in targeted
        if result.delivery == pb.DELIVERY_RECEIVED and _ended(result, pb.JOB_STATE_SUCCEEDED)
    )
    if succeeded == len(targeted):
        return pb.SESSION_STATE_SUCCESS
    stopped = any(
        _ended(result, pb.JOB_STATE_STOPPED) or result.delivery == pb.DELIVERY_CANCELLED
        for result in targeted
    )
    if succeeded == 0 and not stopped:
        return pb.SESSION_STATE_FAILED
    return pb.SESSION_STATE_WARNING


def _stop_outcome(targeted: list[pb.ComputerResult]) -> pb.SessionState:
    received = [result for result in targeted if result.delivery == pb.DELIVERY_RECEIVED]
    if not received:
        return pb.SESSION_STATE_FAILED
    still_running = any(result.job.id and result.job_unknown for result in received)
    if len(received) == len(targeted) and not still_running:
        return pb.SESSION_STATE_SUCCESS
    return pb.SESSION_STATE_WARNING


def note_reconciled(session: pb.PolicySession) -> None:
    """The session's warning that counts its reconciled computers, set or updated."""
    count = sum(1 for r in session.computer_results if r.reconciled)
    note = (
        f"{RECONCILED_WARNING}{count} computer(s) recorded not received had in fact "
        "received the command (their agent's job list shows the job)"
    )
    for index, warning in enumerate(session.warnings):
        if warning.startswith(RECONCILED_WARNING):
            session.warnings[index] = note
            break
    else:
        session.warnings.append(note)


def ended_job(job: pb.Job) -> bool:
    """Whether a job snapshot is final."""
    return job.state not in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_UNSPECIFIED)


def follows(result: pb.ComputerResult) -> bool:
    """Whether the server should follow this computer's job: received, with a job that was
    running when last seen (a start's job, an already-running one, or a stopped one)."""
    return result.delivery == pb.DELIVERY_RECEIVED and job_running(result)


def awaits_reconciliation(result: pb.ComputerResult) -> bool:
    """A computer whose command ran out of time may have received it: ask its agent."""
    return result.delivery == pb.DELIVERY_NOT_RECEIVED and result.detail.startswith(
        "DEADLINE_EXCEEDED"
    )


@dataclass(frozen=True)
class Correction:
    """A final outcome's header corrected from the rows: `before` as it was stored (or,
    the first time, as its owner's hooks saw it), `after` with the rows' job counts and
    outcome."""

    before: pb.PolicySession
    after: pb.PolicySession


def is_final(outcome: pb.SessionState) -> bool:
    """Whether an outcome is final (neither RUNNING nor never set)."""
    return outcome not in (pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_UNSPECIFIED)


def _header(session: pb.PolicySession) -> tuple[object, ...]:
    """What a correction is a change of: the counts, the state and the outcome."""
    return (session.statistics.SerializeToString(), session.state, session.outcome)


def recounted(
    rows: pb.PolicySession, before: pb.PolicySession
) -> tuple[pb.PolicySession, Correction | None]:
    """The header that a session's stored rows (`rows`, the session with its results as
    just written) call for, given `before`, a final outcome; with the correction of
    `before` it is, or None when its counts, state and outcome stand (the header then
    keeps `before`'s outcome time).

    As one server corrects an outcome (`tracking.OutcomeTracker`): the job counts and the
    outcome, and for a computer reconciled late the delivery counts, the state and the
    reconciled warning, with one difference: a job that answered late still running
    leaves the outcome final (its count moves to jobs_running), so that no stored outcome
    goes back to RUNNING where no live replica may follow the session any more; its end
    corrects it again."""
    after = pb.PolicySession()
    after.CopyFrom(rows)
    recount(after)
    if any(result.reconciled for result in after.computer_results):
        note_reconciled(after)
    count_jobs(after)
    outcome = outcome_of(after)
    after.outcome = before.outcome if outcome == pb.SESSION_STATE_RUNNING else outcome
    if _header(after) == _header(before):
        after.outcome_time.CopyFrom(before.outcome_time)
        return after, None
    after.outcome_time.FromNanoseconds(time.time_ns())
    return after, Correction(before, after)
