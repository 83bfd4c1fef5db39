"""The rows both backends store, made from protos and back, with no driver in sight.

A session is a header row plus one row per computer; policies and groups are their
serialized protos beside the columns queries need. The SQLite and PostgreSQL backends
differ in their SQL only, so what a row holds is written once, here.
"""

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction, is_final
from ..sessions import Progress, ResultChange, StoredOutcome
from .interface import INTERRUPTED

STAT_FIELDS = (
    "total",
    "pending",
    "received",
    "not_received",
    "skipped",
    "rejected",
    "cancelled",
    "jobs_running",
    "jobs_succeeded",
    "jobs_failed",
    "jobs_stopped",
    "jobs_unknown",
)
# A computer's row after its (session, position) key, in this order everywhere.
RESULT_FIELDS = (
    "name",
    "address",
    "protection_group_id",
    "delivery",
    "detail",
    "latency_ns",
    "job_id",
    "job",  # the serialized Job as last seen; NULL when none
    "reconciled",
    "contact_ns",
    "job_unknown",
)
# What a batch rewrites of a computer's row, after its position, in this order everywhere.
CHANGE_FIELDS = RESULT_FIELDS[3:]
RESULT_COLUMNS = ", ".join(RESULT_FIELDS)


def group_row(group: pb.ProtectionGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "kind": group.kind,
        "body": group.SerializeToString(),
        "create_ns": group.create_time.ToNanoseconds(),
    }


def policy_row(policy: pb.BackupPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "body": policy.SerializeToString(),
        "create_ns": policy.create_time.ToNanoseconds(),
        "update_ns": policy.update_time.ToNanoseconds(),
    }


def header(
    state: int,
    end_ns: int,
    warnings: Sequence[str],
    stats: pb.SessionStatistics,
    outcome: int = 0,
    outcome_ns: int = 0,
) -> dict[str, Any]:
    """The columns a running (or followed) session rewrites with each batch."""
    row: dict[str, Any] = {
        "state": state,
        # A running session's end_ns is its last activity, for recovery.
        "end_ns": end_ns or time.time_ns(),
        "warnings": json.dumps(list(warnings)),
        "outcome": outcome,
        "outcome_ns": outcome_ns,
    }
    row.update({name: getattr(stats, name) for name in STAT_FIELDS})
    return row


def session_row(session: pb.PolicySession, owner: str) -> dict[str, Any]:
    """A new session's header row (without the sequence number the backend assigns)."""
    return {
        "id": session.id,
        "owner": owner,
        "policy_id": session.policy_id,
        "action": session.action,
        "trigger": session.trigger,
        "retry_of_session_id": session.retry_of_session_id,
        "attempt": session.attempt,
        "start_ns": session.start_time.ToNanoseconds(),
        **header(
            session.state,
            session.end_time.ToNanoseconds(),
            session.warnings,
            session.statistics,
            session.outcome,
            session.outcome_time.ToNanoseconds(),
        ),
    }


def progress_header(progress: Progress) -> dict[str, Any]:
    """The header columns a batch of changes rewrites."""
    return header(
        progress.state,
        progress.end_ns,
        progress.warnings,
        progress.statistics,
        progress.outcome,
        progress.outcome_ns,
    )


def recount_columns(session: pb.PolicySession) -> dict[str, Any]:
    """The header columns a recount from the rows writes (`outcomes.recounted`)."""
    return {
        "state": session.state,
        "warnings": json.dumps(list(session.warnings)),
        "outcome": session.outcome,
        "outcome_ns": session.outcome_time.ToNanoseconds(),
        **{name: getattr(session.statistics, name) for name in STAT_FIELDS},
    }


def outcome_seen(stored: pb.PolicySession, progress: Progress) -> pb.PolicySession | None:
    """The final outcome the hooks last saw of a shared session a batch is written for
    (`Storage.save_shared_progress`): the stored one, or the batch's when it is the first
    final one; None while neither is final (nothing to recount)."""
    if is_final(stored.outcome):
        return stored
    if not is_final(progress.outcome):
        return None
    stored.state, stored.outcome = progress.state, progress.outcome
    stored.outcome_time.FromNanoseconds(progress.outcome_ns)
    stored.statistics.CopyFrom(progress.statistics)
    return stored


def outcome_stored(
    progress: Progress, before: pb.PolicySession | None, correction: Correction | None
) -> tuple[Correction | None, StoredOutcome]:
    """What `Storage.save_shared_progress` returns, from `outcome_seen` and the recount
    (whose header keeps `before`'s outcome when it finds no correction)."""
    if before is None:
        return None, (progress.outcome, progress.outcome_ns)
    final = before if correction is None else correction.after
    return correction, (final.outcome, final.outcome_time.ToNanoseconds())


def change_row(change: ResultChange) -> tuple[Any, ...]:
    """CHANGE_FIELDS of one changed computer."""
    return (
        change.delivery,
        change.detail,
        change.latency_ns,
        change.job_id,
        change.job or None,
        change.reconciled,
        change.contact_ns,
        change.job_unknown,
    )


def result_rows(session: pb.PolicySession) -> Iterator[tuple[Any, ...]]:
    """(position, *RESULT_FIELDS) for each computer of a new session."""
    for position, result in enumerate(session.computer_results):
        yield (
            position,
            result.computer.name,
            result.computer.address,
            result.protection_group_id,
            result.delivery,
            result.detail,
            result.latency.ToNanoseconds(),
            result.job_id,
            result.job.SerializeToString() if result.job.id else None,
            result.reconciled,
            result.last_contact_time.ToNanoseconds(),
            result.job_unknown,
        )


def session_from_row(row: Mapping[str, Any]) -> pb.PolicySession:
    """A session's header (no results yet) from its row."""
    session = pb.PolicySession(
        id=str(row["id"]),
        policy_id=str(row["policy_id"]),
        action=row["action"],
        state=row["state"],
        warnings=json.loads(str(row["warnings"])),
        trigger=row["trigger"],
        retry_of_session_id=str(row["retry_of_session_id"]),
        attempt=row["attempt"],
        outcome=row["outcome"],
    )
    if row["outcome_ns"]:
        session.outcome_time.FromNanoseconds(int(row["outcome_ns"]))
    session.start_time.FromNanoseconds(int(row["start_ns"]))
    if row["end_ns"] and session.state != pb.SESSION_STATE_RUNNING:
        session.end_time.FromNanoseconds(int(row["end_ns"]))
    for name in STAT_FIELDS:
        setattr(session.statistics, name, row[name])
    return session


def add_results(session: pb.PolicySession, rows: Iterable[Sequence[Any]]) -> None:
    """Appends each row (RESULT_FIELDS, in position order) as a computer result."""
    for (
        name,
        address,
        group_id,
        delivery,
        detail,
        latency_ns,
        job_id,
        job,
        reconciled,
        contact_ns,
        job_unknown,
    ) in rows:
        result = session.computer_results.add(
            protection_group_id=group_id,
            delivery=delivery,
            detail=detail,
            job_id=job_id,
            reconciled=bool(reconciled),
            job_unknown=bool(job_unknown),
        )
        if job:
            result.job.ParseFromString(bytes(job))
        if contact_ns:
            result.last_contact_time.FromNanoseconds(contact_ns)
        result.computer.name = name
        result.computer.address = address
        if latency_ns:
            # As the live session has it: no latency for a computer never called.
            result.latency.FromNanoseconds(latency_ns)


def interrupted_warnings(warnings: str) -> str:
    """A stored warnings column with the INTERRUPTED warning appended."""
    return json.dumps([*json.loads(warnings), INTERRUPTED])
