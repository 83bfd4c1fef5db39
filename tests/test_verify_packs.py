"""Verify reads packed chunks pack by pack: each pack opened once, damage still named per chunk."""

import builtins
import os
from pathlib import Path
from typing import Any

import pytest
from engine_support import back_up, flip_byte, policy, write

from agent_stub import engine
from agent_stub.engine import packs


def small_files(tmp_path: Path, count: int) -> tuple[engine.Repository, str]:
    source = tmp_path / "source"
    for index in range(count):
        write(source / f"d{index % 7}" / f"f{index}", os.urandom(1000 + index))
    point_id, _ = back_up(policy(source, tmp_path / "repository"))
    return engine.Repository.open(tmp_path / "repository"), point_id


def test_each_pack_is_opened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """400 small files in one pack: verify checks all of them with one open of that pack."""
    repository, _ = small_files(tmp_path, 400)
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if "/packs/" in str(file):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    result = engine.verify(repository)
    assert result.problems == [] and result.files == 400 and result.chunks == 400
    assert len(opened) == len(set(opened)) == len(repository.pack_ids()) == 1


def test_a_truncated_pack_names_only_the_chunks_past_its_end(tmp_path: Path) -> None:
    """Cutting a pack's last record short damages that chunk alone; the others verify."""
    repository, point_id = small_files(tmp_path, 30)
    (pack_id,) = repository.pack_ids()
    path = packs.pack_path(repository.packs, pack_id)
    os.truncate(path, path.stat().st_size - 10)
    last = max(repository.locations.items(), key=lambda item: item[1][1])[0]
    result = engine.verify(engine.Repository.open(tmp_path / "repository"))
    chunk_problems = [p for p in result.problems if p.startswith("chunk ")]
    assert len(chunk_problems) == 1 and last in chunk_problems[0]
    assert "truncated" in chunk_problems[0] and result.chunks == 29


def test_a_flipped_byte_in_a_pack_damages_one_chunk(tmp_path: Path) -> None:
    """A byte changed inside one record is found by its SHA-256; every other chunk is good."""
    repository, point_id = small_files(tmp_path, 30)
    (pack_id,) = repository.pack_ids()
    name, (_, offset, _) = min(repository.locations.items(), key=lambda item: item[1][1])
    flip_byte(packs.pack_path(repository.packs, pack_id), offset + 100)
    result = engine.verify(engine.Repository.open(tmp_path / "repository"))
    chunk_problems = [p for p in result.problems if p.startswith("chunk ")]
    assert len(chunk_problems) == 1 and name in chunk_problems[0]
    assert point_id in chunk_problems[0] and result.chunks == 29


def test_a_missing_pack_names_every_chunk_in_it(tmp_path: Path) -> None:
    """A pack deleted from under the index: each of its chunks is reported missing."""
    repository, _ = small_files(tmp_path, 12)
    (pack_id,) = repository.pack_ids()
    packs.pack_path(repository.packs, pack_id).unlink()
    result = engine.verify(engine.Repository.open(tmp_path / "repository"))
    missing = [p for p in result.problems if f"its pack {pack_id} is gone" in p]
    assert len(missing) == 12 and result.chunks == 0
