"""The rows of computer shares both backends read, made into what `Storage` returns."""

from collections.abc import Iterable, Sequence
from typing import Any

from ..sessions import ResultChange


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
