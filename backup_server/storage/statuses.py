"""Computers' protection status: one row per policy and computer address.

Each followed job's end updates its computer's row inside the progress write that
records it (`apply_job_ends` here for SQLite, `postgres_statements.apply_job_ends` for
PostgreSQL, both folding with `fold`), so the status never disagrees with the stored
session.
A job end seen twice (a start and a stop session follow the same job, or a late
correction) counts once; an older job's end never replaces a newer one's.
"""

from collections.abc import Iterable

import sqlite_utils

from backup.v1 import resources_pb2 as pb

from ..sessions import JobEnd

NOT_SUCCEEDED = (pb.JOB_STATE_FAILED, pb.JOB_STATE_STOPPED)


def fold(status: pb.ComputerStatus, end: JobEnd) -> bool:
    """Folds one job end into the status; False when it changes nothing."""
    job, last = end.job, status.last_job
    status.computer.CopyFrom(end.computer)
    if not job.id:
        # A start this computer never received (or refused): not protected by it.
        status.consecutive_failures += 1
        return True
    if last.id == job.id and last.state == job.state:
        return False
    if (
        last.id
        and last.id != job.id
        and job.start_time.ToNanoseconds() < (last.start_time.ToNanoseconds())
    ):
        return False  # an older job's end arriving late
    counted_before = last.id == job.id and last.state in NOT_SUCCEEDED
    status.last_job.CopyFrom(job)
    if end.contact_ns:
        status.last_contact_time.FromNanoseconds(end.contact_ns)
    if job.state == pb.JOB_STATE_SUCCEEDED:
        status.last_success_time.CopyFrom(job.end_time)
        status.last_restore_point_id = job.restore_point_id
        status.consecutive_failures = 0
    elif job.state in NOT_SUCCEEDED and not counted_before:
        status.consecutive_failures += 1
    return True


def status_row(end: JobEnd, status: pb.ComputerStatus) -> list[object]:
    """The columns of a computer_statuses row, in table order."""
    return [
        end.policy_id,
        end.computer.address,
        end.computer.name,
        status.consecutive_failures,
        status.last_success_time.ToNanoseconds(),
        status.SerializeToString(),
    ]


def apply_job_ends(db: sqlite_utils.Database, ends: Iterable[JobEnd]) -> None:
    """Updates each ended job's computer row; call inside the progress transaction."""
    for end in ends:
        key = [end.policy_id, end.computer.address]
        row = db.execute(
            "select body from computer_statuses where policy_id = ? and address = ?", key
        ).fetchone()
        status = (
            pb.ComputerStatus.FromString(row[0])
            if row
            else pb.ComputerStatus(policy_id=end.policy_id)
        )
        if not fold(status, end):
            continue
        db.execute(
            "insert or replace into computer_statuses"
            " (policy_id, address, name, consecutive_failures, last_success_ns, body)"
            " values (?, ?, ?, ?, ?, ?)",
            status_row(end, status),
        )


def list_statuses(
    db: sqlite_utils.Database, policy_id: str, after: tuple[str, str], limit: int
) -> list[pb.ComputerStatus]:
    """At most `limit` rows after the (policy id, address) `after`, in that order."""
    where = ["(policy_id, address) > (?, ?)"]
    params: list[object] = list(after)
    if policy_id:
        where.append("policy_id = ?")
        params.append(policy_id)
    rows = db.execute(
        f"select body from computer_statuses where {' and '.join(where)}"
        " order by policy_id, address limit ?",
        [*params, limit],
    )
    return [pb.ComputerStatus.FromString(row[0]) for row in rows]
