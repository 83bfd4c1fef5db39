"""Retention and chunk collection.

Expiring old restore points only removes manifests, which is safe beside running backups
and readers (they hold the lock shared and already read what they need). Deleting chunks
is not: a running backup may be about to name a chunk that no manifest names yet, so a
collection runs only while it holds the repository lock alone, and skips its turn when
it cannot have it at once.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from . import lock
from .errors import PointNotFound
from .files import sync_directory
from .repository import Repository

log = logging.getLogger("agent_stub.engine")

DEFAULT_KEEP = 7


@dataclass(frozen=True)
class Collection:
    chunks_removed: int
    bytes_freed: int


def points_to_keep(retention_points: int) -> int:
    """0 means the default; never fewer than one, so the point just written survives."""
    return max(1, retention_points or DEFAULT_KEEP)


def expire(repository: Repository, policy_id: str, keep: int) -> list[str]:
    """Removes the policy's restore points past the newest `keep`; returns their ids."""
    summaries, _ = repository.summaries()
    expired = [point.id for point in summaries if point.policy_id == policy_id][keep:]
    for point_id in expired:
        repository.remove_point(point_id)
    if expired:
        sync_directory(repository.points)
    return expired


def referenced_chunks(repository: Repository) -> set[str]:
    """Every chunk a committed manifest names; DamagedData if a manifest cannot be read,
    since then nobody can say which chunks it still needs."""
    referenced: set[str] = set()
    summaries, damaged = repository.summaries()
    if damaged:
        raise damaged[0]
    for summary in summaries:
        try:
            manifest = repository.read_point(summary.id)
        except PointNotFound:
            continue
        for entry in manifest.entries:
            referenced.update(entry.chunks)
    return referenced


def collect(repository: Repository, candidates: Iterable[str] | None = None) -> Collection | None:
    """Deletes unreferenced chunks (all, or only `candidates`) and leftovers under tmp/.

    Returns None when the lock is held by someone else: the next collection will do it.
    """
    with lock.exclusive_if_free(repository.root) as alone:
        if not alone:
            log.info("chunk collection in %s deferred: the repository is in use", repository.root)
            return None
        referenced = referenced_chunks(repository)
        removed = freed = 0
        names = list(repository.chunk_names() if candidates is None else candidates)
        for name in names:
            if name not in referenced:
                freed += repository.remove_chunk(name)
                removed += 1
        repository.clear_tmp()
        return Collection(removed, freed)


def clear_stale_staging(repository: Repository) -> bool:
    """Removes what killed writers left under tmp/, if nobody is writing; returns whether."""
    with lock.exclusive_if_free(repository.root) as alone:
        if alone:
            repository.clear_tmp()
        return alone
