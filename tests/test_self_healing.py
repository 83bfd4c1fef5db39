"""Damage found by verify is healed by the next backup, or reported where it cannot be."""

import os
from pathlib import Path

from engine_support import MIB, back_up, cli, flip_byte, policy, restored_source, write

from agent_stub import engine
from agent_stub.engine import packs
from agent_stub.store import AgentStore


def backed_up(tmp_path: Path) -> tuple[Path, Path, str]:
    source = tmp_path / "source"
    # One chunk file of its own: above the pack limit, below the chunker's smallest cut.
    # (A random MiB was cut at random; now and then its tail was small enough to be packed
    # beside the small files, and deleting their pack healed 21 chunks, not 20.)
    write(source / "large", os.urandom(MIB // 5))
    for index in range(20):
        write(source / "small" / f"f{index}", os.urandom(3000 + index))
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    point_id, _ = back_up(backup_policy)
    return tmp_path / "repository", source, point_id


def chunk_of(repository: Path, point_id: str, suffix: str) -> str:
    manifest = engine.Repository.open(repository).read_point(point_id)
    return next(e.chunks[0] for e in manifest.entries if e.path.endswith(suffix))


def test_a_damaged_chunk_is_healed_by_the_next_backup(tmp_path: Path) -> None:
    """verify records a damaged chunk; the next backup writes it again and says so."""
    repository, source, first = backed_up(tmp_path)
    name = chunk_of(repository, first, "large")
    flip_byte(repository / "chunks" / name[:2] / name, 5000)
    damaged = cli("verify", "--data-dir", str(tmp_path / "agent"))
    assert damaged.returncode == 3 and name in damaged.stdout
    _, job = back_up(policy(source, repository))
    assert any("healed 1 damaged or missing chunks" in warning for warning in job.warnings)
    healthy = cli("verify", "--data-dir", str(tmp_path / "agent"))
    assert healthy.returncode == 0, healthy.stdout
    target = tmp_path / "restored"
    done = cli("restore", first, "--to", str(target), "--data-dir", str(tmp_path / "agent"))
    assert done.returncode == 0, done.stderr
    assert (restored_source(target, source) / "large").read_bytes() == (
        source / "large"
    ).read_bytes()


def test_a_deleted_pack_is_healed_from_the_source(tmp_path: Path) -> None:
    """Small files whose pack is gone are found by verify and written again by a backup."""
    repository, source, first = backed_up(tmp_path)
    opened = engine.Repository.open(repository)
    pack_id = opened.locations[chunk_of(repository, first, "small/f3")][0]
    packs.pack_path(opened.packs, pack_id).unlink()
    assert cli("verify", "--data-dir", str(tmp_path / "agent")).returncode == 3
    _, job = back_up(policy(source, repository))
    assert any("healed 20 damaged or missing chunks" in warning for warning in job.warnings)
    assert engine.verify(engine.Repository.open(repository)).problems == []


def test_data_no_source_has_is_reported_and_refused(tmp_path: Path) -> None:
    """A point needing damaged data the source no longer has: points says so, restore
    fails naming the file, and nothing is written over the target."""
    repository, source, first = backed_up(tmp_path)
    name = chunk_of(repository, first, "large")
    (repository / "chunks" / name[:2] / name).unlink()
    (source / "large").unlink()
    data_dir = str(tmp_path / "agent")
    assert cli("verify", "--data-dir", data_dir).returncode == 3
    back_up(policy(source, repository))
    listing = cli("points", "--data-dir", data_dir)
    line = next(line for line in listing.stdout.splitlines() if first in line)
    assert line.endswith("damaged (1 file)")
    done = cli("restore", first, "--to", str(tmp_path / "restored"), "--data-dir", data_dir)
    assert done.returncode == 1
    assert f"{str(source / 'large').lstrip('/')}" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").rglob("*"))
