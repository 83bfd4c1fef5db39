"""Pack files for small chunks: few fsyncs, collection, repair, and the old layout."""

import json
import os
import shutil
from pathlib import Path

import pytest
from engine_support import back_up, cli, flip_byte, policy, restored_source, snapshot, write

from agent_stub import engine
from agent_stub.engine import chunks, manifest, packs
from agent_stub.engine.scan import entry_from
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from agent_stub.store import AgentStore
from backup.v1 import resources_pb2 as pb


def small_tree(root: Path, count: int, seed: int = 0) -> Path:
    for index in range(count):
        write(root / f"d{index % 10}" / f"f{index}", os.urandom(1000 + (index + seed) % 7000))
    return root


def test_many_small_files_cost_fsyncs_per_pack_not_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 small files are written in a handful of packs with a handful of fsyncs."""
    source = small_tree(tmp_path / "source", 2000)
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    point_id, job = back_up(policy(source, tmp_path / "repository"))
    repository = engine.Repository.open(tmp_path / "repository")
    assert 1 <= len(repository.pack_ids()) <= 3
    assert len(calls) <= 20, len(calls)
    assert job.files_done == 2000
    assert list((tmp_path / "repository" / "chunks").glob("*/*")) == []
    engine.restore(repository, point_id, tmp_path / "restored")
    assert snapshot(restored_source(tmp_path / "restored", source)) == snapshot(source)


def test_collection_drops_packs_of_expired_points(tmp_path: Path) -> None:
    """With every small file rewritten each run and retention 1, old packs are deleted."""
    source = tmp_path / "source"
    repository = tmp_path / "repository"
    for run in range(4):
        shutil.rmtree(source, ignore_errors=True)
        small_tree(source, 300, seed=run)
        back_up(policy(source, repository, retention_points=1))
    opened = engine.Repository.open(repository)
    assert len(opened.pack_ids()) == 1
    assert len(list(opened.index.glob("*.json"))) == 1
    assert engine.verify(opened).problems == []


def test_repair_rebuilds_a_lost_index_from_the_packs(tmp_path: Path) -> None:
    """With every index file gone, repair finds each chunk again and exits 0."""
    source = small_tree(tmp_path / "source", 200)
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    point_id, _ = back_up(backup_policy)
    for index_file in (tmp_path / "repository" / "index").iterdir():
        index_file.unlink()
    data_dir = str(tmp_path / "agent")
    assert cli("verify", "--data-dir", data_dir).returncode == 3
    repaired = cli("repair", "--data-dir", data_dir)
    assert repaired.returncode == 0, repaired.stdout
    assert "(200 chunks)" in repaired.stdout and "verify OK" in repaired.stdout
    done = cli("restore", point_id, "--to", str(tmp_path / "t"), "--data-dir", data_dir)
    assert done.returncode == 0, done.stderr


def test_repair_reports_a_damaged_record_and_a_backup_heals_it(tmp_path: Path) -> None:
    """A flipped byte in a pack: repair names it and exits 3; after a backup it exits 0."""
    source = small_tree(tmp_path / "source", 50)
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    back_up(backup_policy)
    repository = engine.Repository.open(tmp_path / "repository")
    (pack_id,) = repository.pack_ids()
    flip_byte(packs.pack_path(repository.packs, pack_id), 100)
    data_dir = str(tmp_path / "agent")
    repaired = cli("repair", "--data-dir", data_dir)
    assert repaired.returncode == 3
    assert f"cannot rebuild: pack {pack_id}: the chunk at offset 36 is damaged" in repaired.stdout
    _, job = back_up(backup_policy)
    assert any("healed 1 damaged" in warning for warning in job.warnings)
    assert cli("repair", "--data-dir", data_dir).returncode == 0
    assert cli("verify", "--data-dir", data_dir).returncode == 0


def version_1_repository(root: Path, source: Path) -> str:
    """A repository as the previous release wrote it: every chunk a file, no id, no packs."""
    repository = engine.Repository.create(root)
    entries = []
    for path in sorted(source.rglob("*")):
        info = path.lstat()
        if path.is_dir():
            entries.append(entry_from(str(path), info, manifest.DIRECTORY))
            continue
        data = path.read_bytes()
        repository.put_chunk(chunks.digest(data), data)
        entry = entry_from(str(path), info, manifest.FILE)
        entries.append(manifest.Entry(**{**entry.__dict__, "chunks": (chunks.digest(data),)}))
    point = manifest.summarize(
        "rp-19990101-000000-00000001", "nightly", "j-1", 1, [str(source)], entries, 0
    )
    repository.commit_point(point)
    for name in ("packs", "index", "damaged", "locks"):
        shutil.rmtree(root / name)
    (root / "points" / f"{point.summary.id}.chunks").unlink()
    (root / "lock").touch()
    config = json.loads((root / "config.json").read_text())
    del config["id"]
    (root / "config.json").write_text(json.dumps({**config, "version": 1}))
    return point.summary.id


def test_a_version_1_repository_keeps_working_and_gets_an_id(tmp_path: Path) -> None:
    """Points of the old layout are listed and restored; a backup into it adds an id and
    reuses its small chunk files instead of writing them again."""
    source = small_tree(tmp_path / "source", 30)
    root = tmp_path / "repository"
    old_point = version_1_repository(root, source)
    backup_policy = policy(source, root)
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    data_dir = str(tmp_path / "agent")
    assert old_point in cli("points", "--data-dir", data_dir).stdout
    done = cli("restore", old_point, "--to", str(tmp_path / "old"), "--data-dir", data_dir)
    assert done.returncode == 0, done.stderr
    assert snapshot(restored_source(tmp_path / "old", source)) == snapshot(source)
    # Another computer, so no file is skipped as unchanged: each is read and deduplicated.
    job = RunningJob(pb.Job(id="j-new", policy_id="nightly"))
    engine.run_backup(backup_job(backup_policy, agent_id="a-other"), job.id, job)
    assert job.snapshot().bytes_read > 0 and job.snapshot().bytes_written == 0
    config = json.loads((root / "config.json").read_text())
    assert config["version"] == 1 and len(config["id"]) == 32
    verify = cli("verify", "--data-dir", data_dir)
    assert verify.returncode == 0 and "verified 1 restore point," in verify.stdout
