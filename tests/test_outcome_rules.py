"""A session's outcome and jobs_* statistics follow DESIGN rule 4 and the issue's precise rules exactly."""

import pytest

from backup.v1 import resources_pb2 as pb
from backup_server.outcomes import count_jobs, outcome_of

S, F, W, R = (
    pb.SESSION_STATE_SUCCESS,
    pb.SESSION_STATE_FAILED,
    pb.SESSION_STATE_WARNING,
    pb.SESSION_STATE_RUNNING,
)
RECEIVED, NOT_RECEIVED, SKIPPED, REJECTED, CANCELLED, PENDING = (
    pb.DELIVERY_RECEIVED,
    pb.DELIVERY_NOT_RECEIVED,
    pb.DELIVERY_SKIPPED,
    pb.DELIVERY_REJECTED,
    pb.DELIVERY_CANCELLED,
    pb.DELIVERY_PENDING,
)
OK, FAIL, STOP, RUN = (
    pb.JOB_STATE_SUCCEEDED,
    pb.JOB_STATE_FAILED,
    pb.JOB_STATE_STOPPED,
    pb.JOB_STATE_RUNNING,
)
LOST = "lost"


def session(action: pb.SessionAction, *computers: tuple) -> pb.PolicySession:
    made = pb.PolicySession(id="s-1", action=action, state=pb.SESSION_STATE_RUNNING)
    for index, (delivery, *job) in enumerate(computers):
        result = made.computer_results.add(delivery=delivery)
        if job:
            result.job.id, result.job.state = f"j-{index}", job[0]
            result.job_unknown = LOST in job
    return made


START, STOP_ACTION = pb.SESSION_ACTION_START, pb.SESSION_ACTION_STOP


@pytest.mark.parametrize(
    ("computers", "outcome"),
    [
        ([(RECEIVED, OK), (RECEIVED, OK), (SKIPPED,)], S),
        ([(RECEIVED, OK), (RECEIVED, FAIL)], W),
        ([(RECEIVED, FAIL), (NOT_RECEIVED,), (REJECTED,)], F),
        ([(RECEIVED, RUN, LOST), (RECEIVED, FAIL)], F),
        ([(RECEIVED, STOP), (RECEIVED, FAIL)], W),
        ([(CANCELLED,), (NOT_RECEIVED,)], W),
        ([(RECEIVED, OK), (NOT_RECEIVED,)], W),
        ([(RECEIVED, RUN), (RECEIVED, OK)], R),
        ([(PENDING,), (RECEIVED, OK)], R),
        ([(SKIPPED,)], W),
    ],
)
def test_start_outcomes(computers, outcome) -> None:
    """SUCCESS only when every targeted computer succeeded; FAILED when none succeeded or was stopped; else WARNING."""
    assert outcome_of(session(START, *computers)) == outcome


@pytest.mark.parametrize(
    ("computers", "outcome"),
    [
        ([(RECEIVED, STOP), (RECEIVED,)], S),
        ([(RECEIVED, RUN), (RECEIVED,)], R),
        ([(RECEIVED, RUN, LOST), (RECEIVED,)], W),
        ([(RECEIVED, STOP), (NOT_RECEIVED,)], W),
        ([(NOT_RECEIVED,), (REJECTED,)], F),
    ],
)
def test_stop_outcomes(computers, outcome) -> None:
    """A stop succeeds when every computer received it and none still runs the job; fails when none received it."""
    assert outcome_of(session(STOP_ACTION, *computers)) == outcome


def test_a_computer_being_reconciled_holds_the_outcome() -> None:
    """While a timed-out computer is being asked, the outcome stays RUNNING."""
    assert outcome_of(session(START, (RECEIVED, OK), (NOT_RECEIVED,)), awaiting=[1]) == R


def test_job_statistics_count_each_state_and_the_unknown() -> None:
    """jobs_* count the computers' jobs by state; a lost one counts only as unknown."""
    made = session(
        START,
        (RECEIVED, OK),
        (RECEIVED, FAIL),
        (RECEIVED, STOP),
        (RECEIVED, RUN),
        (RECEIVED, RUN, LOST),
        (NOT_RECEIVED,),
    )
    count_jobs(made)
    stats = made.statistics
    assert (
        stats.jobs_succeeded,
        stats.jobs_failed,
        stats.jobs_stopped,
        stats.jobs_running,
        stats.jobs_unknown,
    ) == (1, 1, 1, 1, 1)
