"""What other replicas' writes change in a session's record on this one: a row another
replica stored (`apply_row`), and a correction of a shared session's final outcome that
the storage recounted from all its rows (`apply_correction`), with the outcome hooks
that correction runs, once, on the replica whose write changed the stored header
(`run_correction`; see `share_following.py` and `followed.py`)."""

import logging
from collections.abc import Callable, Iterable

from backup.v1 import resources_pb2 as pb

from .outcomes import Correction
from .sessions import ResultChange

log = logging.getLogger("backup_server.shared_records")

# (session, corrected): corrected is True when an outcome already final changed.
OutcomeHook = Callable[[pb.PolicySession, bool], None]


def apply_correction(session: pb.PolicySession, correction: Correction) -> None:
    """Puts a correction the storage recounted into a session's record in memory."""
    after = correction.after
    session.statistics.CopyFrom(after.statistics)
    session.state = after.state
    del session.warnings[:]
    session.warnings.extend(after.warnings)
    session.outcome = after.outcome
    session.outcome_time.CopyFrom(after.outcome_time)


def run_correction(
    correction: Correction,
    before: Iterable[Callable[[pb.PolicySession], None]],
    hooks: Iterable[OutcomeHook],
) -> None:
    """The outcome hooks of a correction the storage recounted from a shared session's
    rows: each `before(correction.before)` (the header it corrected, which another
    replica may have written), then each hook with the corrected session."""
    session = correction.after
    log.info(
        "session %s outcome %s (corrected): %d succeeded, %d failed, %d stopped, %d unknown",
        session.id,
        pb.SessionState.Name(session.outcome).removeprefix("SESSION_STATE_"),
        session.statistics.jobs_succeeded,
        session.statistics.jobs_failed,
        session.statistics.jobs_stopped,
        session.statistics.jobs_unknown,
        extra={"session_id": session.id},
    )
    for remember in before:
        remember(correction.before)
    for hook in hooks:
        hook(session, True)


def apply_row(result: pb.ComputerResult, change: ResultChange) -> None:
    """Sets a computer's result as a stored row has it (written by another replica)."""
    result.delivery, result.detail, result.job_id = change.delivery, change.detail, change.job_id
    if change.job:
        result.job.ParseFromString(change.job)
    else:
        result.ClearField("job")
    result.reconciled, result.job_unknown = change.reconciled, change.job_unknown
    if change.contact_ns:
        result.last_contact_time.FromNanoseconds(change.contact_ns)
