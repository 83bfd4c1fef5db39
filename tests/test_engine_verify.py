"""Verify finds damaged chunks and manifests and names them, from the engine and the CLI."""

import os
from pathlib import Path

from engine_support import MIB, back_up, cli, flip_byte, policy, write

from agent_stub import engine
from agent_stub.store import AgentStore


def two_points(tmp_path: Path) -> tuple[Path, Path, str, str]:
    source = tmp_path / "source"
    write(source / "stable", os.urandom(MIB))
    write(source / "changing", os.urandom(MIB))
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    first, _ = back_up(backup_policy)
    write(source / "changing", os.urandom(MIB))
    second, _ = back_up(backup_policy)
    return tmp_path / "repository", source, first, second


def chunk_of(repository: Path, point_id: str, path: str) -> str:
    manifest = engine.Repository.open(repository).read_point(point_id)
    return next(e.chunks[0] for e in manifest.entries if e.path.endswith(path))


def test_clean_repository_verifies(tmp_path: Path) -> None:
    """Every chunk is read back once and matches; the CLI exits 0 and says OK."""
    repository, _, first, second = two_points(tmp_path)
    result = engine.verify(engine.Repository.open(repository))
    assert result.problems == []
    assert result.points == [first, second]
    assert result.files == 4 and result.bytes == 3 * MIB
    done = cli("verify", "--data-dir", str(tmp_path / "agent"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("read back: OK")


def test_flipped_byte_in_a_chunk_is_found_and_named(tmp_path: Path) -> None:
    """One flipped bit in a chunk names that chunk and the files of both points needing it."""
    repository, _, first, second = two_points(tmp_path)
    name = chunk_of(repository, first, "stable")
    flip_byte(repository / "chunks" / name[:2] / name, 1000)
    result = engine.verify(engine.Repository.open(repository))
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert name in problem and "does not match" in problem
    assert f"{first}: " in problem and f"{second}: " in problem and "stable" in problem
    done = cli("verify", "--data-dir", str(tmp_path / "agent"), second)
    assert done.returncode == 3
    assert f"damaged: chunk {name}" in done.stdout


def test_missing_chunk_and_damaged_manifest_are_named(tmp_path: Path) -> None:
    """A deleted chunk is reported missing; a corrupt manifest is reported by point id."""
    repository, _, first, second = two_points(tmp_path)
    name = chunk_of(repository, second, "changing")
    (repository / "chunks" / name[:2] / name).unlink()
    manifest = repository / "points" / f"{first}.jsonl.zst"
    flip_byte(manifest, manifest.stat().st_size - 3)
    problems = engine.verify(engine.Repository.open(repository)).problems
    assert any(name in p and "missing" in p and second in p for p in problems)
    assert any(first in p and "manifest" in p for p in problems)
    done = cli("verify", "--data-dir", str(tmp_path / "agent"), first)
    assert done.returncode == 3
    assert first in done.stdout and "Traceback" not in done.stderr
