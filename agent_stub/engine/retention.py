"""Retention and garbage collection.

Retention is per policy and computer: a job expires only its own computer's old points
(and points written before points named their computer, which nobody else can claim).
Expiring only removes manifests, which is safe beside running backups and readers.

Deleting data is not: a running backup, on this computer or another, may be about to name
a chunk that no manifest names yet. So collection runs only while it holds the repository
lock alone (lock.py: lock files inside the repository, so it holds across computers), and
skips its turn when it cannot have it at once. Under that lock no backup runs, so a pack
no index names is a killed job's leftover, and a pack mostly unreferenced is rewritten
with only what is still used. New packs and their index are durable before anything old
is deleted, so a collection killed at any moment loses nothing a manifest names.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from . import chunks, lock, packs
from .errors import DamagedData, PointNotFound
from .files import sync_directory
from .manifest import PointSummary
from .repository import Repository

log = logging.getLogger("agent_stub.engine")

DEFAULT_KEEP = 7
# A pack less than this fraction used is rewritten with what is still used.
REPACK_BELOW = 0.5
# More index files than this are folded into one by a collection.
INDEX_FILES_KEPT = 8


@dataclass(frozen=True)
class Collection:
    chunks_removed: int
    bytes_freed: int


def points_to_keep(retention_points: int) -> int:
    """0 means the default; never fewer than one, so the point just written survives."""
    return max(1, retention_points or DEFAULT_KEEP)


def owned(point: PointSummary, policy_id: str, agent_id: str) -> bool:
    return point.policy_id == policy_id and point.agent_id in (agent_id, "")


def expire(repository: Repository, policy_id: str, keep: int, agent_id: str = "") -> list[str]:
    """Removes the computer's points of the policy past the newest `keep`; returns their ids."""
    summaries, _ = repository.summaries()
    expired = [point.id for point in summaries if owned(point, policy_id, agent_id)][keep:]
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
            referenced.update(repository.point_chunks(summary.id))
        except PointNotFound:
            continue
    return referenced


def collect(
    repository: Repository, candidates: Iterable[str] | None = None, agent_id: str = ""
) -> Collection | None:
    """Deletes unreferenced data (all, or only the `candidates` chunk files) and leftovers
    under tmp/. Returns None when the lock is held by someone else."""
    with lock.exclusive_if_free(repository.root, agent_id) as alone:
        if not alone:
            log.info("chunk collection in %s deferred: the repository is in use", repository.root)
            return None
        repository.reload_index()
        if repository.index_problems:
            raise DamagedData("the repository's index", "; ".join(repository.index_problems))
        referenced = referenced_chunks(repository)
        removed = freed = 0
        names = list(repository.loose_chunk_names() if candidates is None else candidates)
        for name in names:
            if name not in referenced and name not in repository.locations:
                freed += repository.remove_chunk(name)
                removed += 1
        if candidates is None:
            packed_removed, packed_freed = _collect_packs(repository, referenced)
            removed += packed_removed
            freed += packed_freed
        repository.remove_orphan_chunk_lists()
        repository.clear_tmp()
        return Collection(removed, freed)


def _collect_packs(repository: Repository, referenced: set[str]) -> tuple[int, int]:
    """Drops unreferenced chunks from the index, deletes packs nothing uses and rewrites
    those mostly unused; returns (chunks dropped, bytes freed)."""
    by_pack: dict[str, list[tuple[str, int, int]]] = {}
    for name, (pack_id, offset, length) in repository.locations.rows():
        by_pack.setdefault(pack_id, []).append((name, offset, length))
    on_disk = set(repository.pack_ids())
    keep: dict[str, list[tuple[str, int, int]]] = {}
    doomed: list[str] = [pack_id for pack_id in on_disk if pack_id not in by_pack]
    rewrite: list[tuple[str, bytes]] = []
    dropped = freed = 0
    for pack_id, rows in by_pack.items():
        if pack_id not in on_disk:
            continue  # its chunks are missing: verify reports them, repair drops them
        live = [row for row in rows if row[0] in referenced]
        dropped += len(rows) - len(live)
        size = packs.pack_path(repository.packs, pack_id).stat().st_size
        live_bytes = sum(packs.RECORD_HEADER + length for _, _, length in live)
        if live and live_bytes >= size * REPACK_BELOW:
            keep[pack_id] = live
            continue
        rewrite.extend((name, repository.read_chunk(name)) for name, _, _ in live)
        freed += size - live_bytes
        doomed.append(pack_id)
    index_files = sorted(repository.index.glob("*.json"))
    if not doomed and not dropped and len(index_files) <= INDEX_FILES_KEPT:
        return 0, 0
    writer = packs.PackWriter(repository.packs, repository.tmp)
    for name, data in rewrite:
        writer.add(name, chunks.pack(data))
    writer.finish()
    keep.update(writer.written)
    # The new index and packs are durable before anything they replace is deleted.
    packs.write_index(repository.index, repository.tmp, keep)
    for path in index_files:
        path.unlink(missing_ok=True)
    for pack_id in doomed:
        packs.pack_path(repository.packs, pack_id).unlink(missing_ok=True)
    repository.reload_index()
    return dropped, freed


def clear_stale_staging(repository: Repository) -> bool:
    """Removes what killed writers left under tmp/, if nobody is writing; returns whether."""
    with lock.exclusive_if_free(repository.root) as alone:
        if alone:
            repository.clear_tmp()
        return alone
