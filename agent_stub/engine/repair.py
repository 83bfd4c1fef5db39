"""Repair: the index rebuilt from the packs themselves, since each pack describes itself.

Every record of every pack is read and checked against its SHA-256 name; the good ones
make one new index, which replaces every index file. What cannot be rebuilt (a damaged
record, a truncated pack) is reported and recorded as damaged where an index named it, so
the next backup writes it again from the source wherever the source still has it.
"""

from dataclasses import dataclass, field

from . import chunks, lock, packs
from .repository import Repository


@dataclass
class Repaired:
    packs: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)


def repair(repository: Repository, agent_id: str = "") -> Repaired:
    """Rebuilds the index from the packs, alone in the repository (waits for its turn)."""
    done = Repaired()
    while True:
        with lock.exclusive_if_free(repository.root, agent_id) as alone:
            if alone:
                _rebuild(repository, done)
                return done
        lock.wait_for_turn()


def _rebuild(repository: Repository, done: Repaired) -> None:
    repository.reload_index()
    before = dict(repository.locations)
    rebuilt: dict[str, list[tuple[str, int, int]]] = {}
    for pack_id in repository.pack_ids():
        rows = []
        for record in packs.records(packs.pack_path(repository.packs, pack_id)):
            if isinstance(record, str):
                done.problems.append(f"pack {pack_id}: {record}")
                break
            name, offset, stored = record
            try:
                good = chunks.digest(chunks.unpack(stored)) == name
            except ValueError:
                good = False
            if not good:
                done.problems.append(f"pack {pack_id}: the chunk at offset {offset} is damaged")
                continue
            rows.append((name, offset, len(stored)))
        if rows:
            rebuilt[pack_id] = rows
            done.packs += 1
            done.chunks += len(rows)
    index_files = sorted(repository.index.glob("*.json"))
    packs.write_index(repository.index, repository.tmp, rebuilt)
    for path in index_files:
        path.unlink(missing_ok=True)
    repository.reload_index()
    for name in before:
        if name not in repository.locations and not repository.chunk_path(name).exists():
            repository.mark_damaged(name)
            done.problems.append(f"chunk {name}: in no pack any more")
