"""Restores: part of a point, existing files, and manifests crafted to escape the target."""

import os
from pathlib import Path

import pytest
from engine_support import back_up, make_tree, policy, restored_source, snapshot, write

from agent_stub import engine
from agent_stub.engine import chunks
from agent_stub.engine.manifest import DIRECTORY, FILE, SYMLINK, Entry, summarize


def crafted_point(repository_path: Path, entries: list[Entry]) -> str:
    """Commits a restore point with exactly these entries, as a hostile writer could."""
    repository = engine.Repository.create(repository_path)
    data = b"payload\n"
    repository.put_chunk(chunks.digest(data), data)
    filled = [
        Entry(**{**entry.__dict__, "chunks": (chunks.digest(data),), "size": len(data)})
        if entry.kind == FILE
        else entry
        for entry in entries
    ]
    repository.commit_point(summarize("rp-crafted", "evil", "j-1", 1, ["/x"], filled, 0))
    return "rp-crafted"


def file_entry(path: str) -> Entry:
    return Entry(path=path, kind=FILE, mode=0o644, mtime_ns=0)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([file_entry("x/../../escaped")], "contains '..'"),
        ([file_entry("/tmp/escaped")], "is absolute"),
        ([file_entry("x//escaped")], "empty or '.' component"),
        (
            [
                Entry(path="x/out", kind=SYMLINK, mode=0o777, mtime_ns=0, target="/tmp"),
                file_entry("x/out/escaped"),
            ],
            "below its own symlink 'x/out'",
        ),
    ],
)
def test_crafted_manifest_is_refused_before_writing(
    tmp_path: Path, entries: list[Entry], message: str
) -> None:
    """A manifest entry that could write outside the target refuses the whole restore."""
    repository = tmp_path / "repository"
    point_id = crafted_point(repository, [file_entry("x/innocent"), *entries])
    target = tmp_path / "deep" / "target"
    with pytest.raises(engine.RestoreRefused, match=message):
        engine.restore(engine.Repository.open(repository), point_id, target)
    assert not target.exists()
    assert not list(tmp_path.rglob("escaped"))


def test_existing_symlink_in_target_is_not_followed(tmp_path: Path) -> None:
    """A symlink already in the target cannot redirect the restore elsewhere."""
    repository = tmp_path / "repository"
    point_id = crafted_point(
        repository, [Entry(path="x", kind=DIRECTORY, mode=0o755, mtime_ns=0), file_entry("x/f")]
    )
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", target / "x")
    with pytest.raises(engine.RestoreRefused, match="not a directory"):
        engine.restore(engine.Repository.open(repository), point_id, target)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_path_restores_only_that_part(tmp_path: Path) -> None:
    """--path restores the subtree it names and nothing else."""
    source = make_tree(tmp_path / "source")
    point_id, _ = back_up(policy(source, tmp_path / "repository"))
    repository = engine.Repository.open(tmp_path / "repository")
    engine.restore(repository, point_id, tmp_path / "target", f"{source}/docs")
    restored = restored_source(tmp_path / "target", source)
    assert sorted(p.name for p in restored.iterdir()) == ["docs"]
    assert snapshot(restored / "docs") == snapshot(source / "docs")
    with pytest.raises(engine.RestoreRefused, match="holds nothing at"):
        engine.restore(repository, point_id, tmp_path / "other", f"{source}/no-such")


def test_damaged_chunk_leaves_an_existing_file_untouched(tmp_path: Path) -> None:
    """Restoring over a file writes aside and renames, so bad data never replaces good."""
    source = write(tmp_path / "source" / "file", os.urandom(100_000)).parent
    point_id, _ = back_up(policy(source, tmp_path / "repository"))
    repository = engine.Repository.open(tmp_path / "repository")
    engine.restore(repository, point_id, tmp_path / "target")
    restored = restored_source(tmp_path / "target", source) / "file"
    restored.write_bytes(b"the user's newer work")
    for chunk in (tmp_path / "repository" / "chunks").glob("*/*"):
        chunk.write_bytes(chunk.read_bytes()[:-1] + b"?")
    with pytest.raises(engine.DamagedData, match="does not match"):
        engine.restore(repository, point_id, tmp_path / "target")
    assert restored.read_bytes() == b"the user's newer work"
    assert [p.name for p in restored.parent.iterdir()] == ["file"]
