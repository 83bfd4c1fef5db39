"""Retention, chunk collection and the repository lock."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_support import (
    MIB,
    back_up,
    chunk_files,
    flip_byte,
    policy,
    unreferenced_chunks,
    write,
)

from agent_stub import engine
from agent_stub.engine import chunks, lock, retention


def point_ids(repository: Path, policy_id: str) -> list[str]:
    summaries, _ = engine.Repository.open(repository).summaries()
    return [point.id for point in summaries if point.policy_id == policy_id]


def test_retention_keeps_the_newest_points_and_collects_their_chunks(tmp_path: Path) -> None:
    """With retention_points 2, exactly the two newest points stay and no chunk is left over."""
    repository = tmp_path / "repository"
    other_source = write(tmp_path / "other" / "file", os.urandom(MIB)).parent
    (other_point, _) = back_up(policy(other_source, repository, "other"))
    kept = policy(tmp_path / "source", repository, "kept", retention_points=2)
    made = []
    for run in range(4):
        write(tmp_path / "source" / "changing", os.urandom(MIB + run))
        made.append(back_up(kept)[0])
    assert point_ids(repository, "kept") == made[:1:-1]
    assert point_ids(repository, "other") == [other_point]
    assert unreferenced_chunks(repository) == set()
    assert engine.verify(engine.Repository.open(repository)).problems == []


def test_retention_zero_means_seven(tmp_path: Path) -> None:
    """retention_points 0 keeps the default of seven restore points."""
    repository = tmp_path / "repository"
    for run in range(9):
        write(tmp_path / "source" / "file", f"run {run}".encode())
        back_up(policy(tmp_path / "source", repository))
    assert len(point_ids(repository, "nightly")) == 7


def test_a_negative_retention_never_expires_the_point_just_written(tmp_path: Path) -> None:
    """Should a negative retention reach the engine, the newest point still survives."""
    repository = tmp_path / "repository"
    made = []
    for run in range(2):
        write(tmp_path / "source" / "file", f"run {run}".encode())
        made.append(back_up(policy(tmp_path / "source", repository, retention_points=-5))[0])
    assert point_ids(repository, "nightly") == [made[-1]]


def test_collection_waits_for_a_backup_holding_the_lock(tmp_path: Path) -> None:
    """While another writer holds the lock, a job's collection is deferred, then done later."""
    repository = tmp_path / "repository"
    source = write(tmp_path / "source" / "file", os.urandom(MIB)).parent
    back_up(policy(source, repository))
    # A chunk some other job is in the middle of writing: no manifest names it yet.
    in_progress = engine.Repository.open(repository)
    data = os.urandom(1000)
    name = chunks.digest(data)
    in_progress.put_chunk(name, data)
    with lock.shared(repository):
        back_up(policy(source, repository))
        assert name in chunk_files(repository)
    back_up(policy(source, repository))
    assert name not in chunk_files(repository)


def test_lock_of_a_killed_process_is_broken_at_once(tmp_path: Path) -> None:
    """A process killed with SIGKILL while holding the lock does not block collection."""
    repository = tmp_path / "repository"
    back_up(policy(write(tmp_path / "source" / "file", b"x").parent, repository))
    script = (
        "import sys, time; from pathlib import Path; from agent_stub.engine import lock\n"
        "with lock.shared(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    command = [sys.executable, "-c", script, str(repository)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            opened = engine.Repository.open(repository)
            assert retention.collect(opened) is None
            holder.kill()
            holder.wait(10)
            started = time.monotonic()
            assert retention.collect(opened) is not None
            assert time.monotonic() - started < 1.0
        finally:
            holder.kill()


def test_damaged_manifest_stops_collection_from_deleting(tmp_path: Path) -> None:
    """If a manifest cannot be read, no chunk is deleted, and the job says so."""
    repository = tmp_path / "repository"
    source = tmp_path / "source"
    write(source / "file", os.urandom(MIB))
    first, _ = back_up(policy(source, repository, "first"))
    # The manifest itself, not its chunk list (a cache rebuilt from the manifest when damaged).
    manifest = engine.Repository.open(repository).manifest_path(first)
    flip_byte(manifest, manifest.stat().st_size // 2)
    chunks_before = chunk_files(repository)
    write(source / "file", os.urandom(MIB))
    _, job = back_up(policy(source, repository, "second"))
    assert chunks_before <= chunk_files(repository)
    assert any("not collected" in warning and first in warning for warning in job.warnings)
    with pytest.raises(engine.DamagedData, match=first):
        retention.referenced_chunks(engine.Repository.open(repository))
