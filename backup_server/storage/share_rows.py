"""The rows of computer shares both backends read, made into what `Storage` returns."""

from collections.abc import Iterable, Sequence
from typing import Any

from backup.v1 import resources_pb2 as pb

from ..sessions import ResultChange


def earlier_starts_query(mark: str) -> tuple[str, list[int]]:
    """The SQL of `pending_earlier_starts` with the driver's parameter `mark` (its
    parameters after the stop's seq, twice, which the caller puts first)."""
    return (
        "select s.id, r.position, r.address from sessions s"
        " join computer_results r on r.session_seq = s.seq"
        f" where s.policy_id = (select policy_id from sessions where seq = {mark})"
        f" and s.seq < {mark} and s.action = {mark} and s.state = {mark}"
        f" and r.delivery = {mark} order by s.id, r.position",
        [pb.SESSION_ACTION_START, pb.SESSION_STATE_RUNNING, pb.DELIVERY_PENDING],
    )


def by_key(found: Iterable[Sequence[Any]]) -> dict[str, list[int]]:
    """(key, position) rows, in order, as positions by key (a share or a session id)."""
    grouped: dict[str, list[int]] = {}
    for key, position in found:
        grouped.setdefault(str(key), []).append(int(position))
    return grouped


def changes_from_rows(found: Iterable[Sequence[Any]]) -> list[ResultChange]:
    """(position, *CHANGE_FIELDS) rows as the changes a live session merges."""
    return [
        ResultChange(
            position=int(position),
            delivery=delivery,
            detail=str(detail),
            latency_ns=int(latency_ns),
            job_id=str(job_id),
            job=bytes(job) if job else b"",
            reconciled=bool(reconciled),
            contact_ns=int(contact_ns),
            job_unknown=bool(job_unknown),
        )
        for (
            position,
            delivery,
            detail,
            latency_ns,
            job_id,
            job,
            reconciled,
            contact_ns,
            job_unknown,
        ) in found
    ]
