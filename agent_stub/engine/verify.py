"""Verify: re-read every chunk that restore points need and check it against its name.

Each chunk is read once however many files and points share it, a point's chunks pack by
pack in offset order (see ChunkStore.check_chunks); each file's chunks must add up to its
size. A problem names the damaged thing and what depends on it. A damaged
or missing chunk is recorded in the repository (damaged/), so the next backup that still
finds its data in a source writes it again, and a chunk found good again is cleared.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from . import lock
from .errors import DamagedData, PointNotFound
from .manifest import FILE, PointSummary
from .repository import Repository

USERS_SHOWN = 3


@dataclass
class Verified:
    points: list[str] = field(default_factory=list)
    files: int = 0
    chunks: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _DamagedChunk:
    problem: str
    users: list[str] = field(default_factory=list)


def verify(
    repository: Repository,
    point_ids: list[str] | None = None,
    keep: Callable[[PointSummary], bool] | None = None,
) -> Verified:
    """Checks the given points (all, or those `keep` selects, when None); `problems` is
    empty when all is well."""
    result = Verified()
    sizes: dict[str, int] = {}
    damaged: dict[str, _DamagedChunk] = {}
    with lock.shared(repository.root):
        result.problems.extend(repository.index_problems_now())
        if point_ids is None:
            summaries, unreadable = repository.summaries()
            result.problems.extend(str(error) for error in unreadable)
            point_ids = [s.id for s in reversed(summaries) if keep is None or keep(s)]
        for point_id in point_ids:
            try:
                manifest = repository.read_point(point_id)
            except DamagedData as error:
                result.problems.append(str(error))
                continue
            except PointNotFound:
                continue  # expired since it was listed
            result.points.append(point_id)
            files = [entry for entry in manifest.entries if entry.kind == FILE]
            # The point's chunks not checked yet, read pack by pack (see check_chunks).
            wanted = {
                name
                for entry in files
                for name in entry.chunks
                if name not in sizes and name not in damaged
            }
            for name, outcome in repository.check_chunks(wanted):
                if isinstance(outcome, DamagedData):
                    damaged[name] = _DamagedChunk(outcome.problem)
                    repository.mark_damaged(name)
                    continue
                sizes[name] = outcome
                result.chunks += 1
                result.bytes += outcome
                if name in repository.damaged_chunks:
                    repository.mark_healed(name)
            for entry in files:
                result.files += 1
                total = 0
                for name in entry.chunks:
                    if name in damaged:
                        damaged[name].users.append(f"{point_id}: {entry.path}")
                        total = -1
                    elif total >= 0:
                        total += sizes[name]
                if total >= 0 and total != entry.size:
                    result.problems.append(
                        f"restore point {point_id}: {entry.path}: its chunks hold {total} "
                        f"bytes, the manifest says {entry.size}"
                    )
    for name, chunk in damaged.items():
        shown = "; ".join(chunk.users[:USERS_SHOWN])
        more = len(chunk.users) - USERS_SHOWN
        result.problems.append(
            f"chunk {name}: {chunk.problem}; needed by {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    return result
