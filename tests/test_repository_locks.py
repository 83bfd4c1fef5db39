"""Lock files inside the repository: owners, refresh, stale locks, and a lock lost."""

import json
import os
import time
from pathlib import Path

import pytest
from engine_support import MIB, back_up, policy, write

from agent_stub import engine
from agent_stub.engine import lock, retention
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from backup.v1 import resources_pb2 as pb


def foreign_lock(root: Path, exclusive: bool, age: float = 0.0) -> Path:
    """A lock held by an agent on another computer, last refreshed `age` seconds ago."""
    path = root / "locks" / f"other-{exclusive}.json"
    record = {"agent_id": "a-far", "host": "far-away", "pid": 1, "exclusive": exclusive}
    path.write_text(json.dumps(record))
    refreshed = time.time() - age
    os.utime(path, (refreshed, refreshed))
    return path


def test_a_lock_file_names_its_owner(tmp_path: Path) -> None:
    """While held, the lock is a file saying which agent, host and process hold it."""
    repository = tmp_path / "repository"
    back_up(policy(write(tmp_path / "source" / "f", b"x").parent, repository))
    with lock.shared(repository, agent_id="a-me"):
        (held,) = (repository / "locks").glob("*.json")
        record = json.loads(held.read_text())
        assert record == {
            "agent_id": "a-me",
            "host": lock.HOST,
            "pid": os.getpid(),
            "exclusive": False,
        }
    assert list((repository / "locks").iterdir()) == []


def test_another_computers_backup_defers_collection(tmp_path: Path) -> None:
    """A fresh shared lock from another host keeps collection away; a stale one does not."""
    repository = tmp_path / "repository"
    back_up(policy(write(tmp_path / "source" / "f", b"x").parent, repository))
    opened = engine.Repository.open(repository)
    far = foreign_lock(repository, exclusive=False)
    assert retention.collect(opened) is None
    os.utime(far, (time.time() - lock.STALE_SECONDS - 1,) * 2)
    assert retention.collect(opened) is not None
    assert not far.exists(), "the stale lock is removed by whoever takes the lock alone"


def test_a_backup_waits_for_another_computers_collection(tmp_path: Path) -> None:
    """A fresh exclusive lock makes a backup wait; once it goes, the backup runs."""
    repository = tmp_path / "repository"
    source = write(tmp_path / "source" / "f", b"x").parent
    back_up(policy(source, repository))
    far = foreign_lock(repository, exclusive=True)
    waits = []

    def pause() -> None:
        waits.append(1)
        if len(waits) == 3:
            far.unlink()

    with lock.shared(repository, pause=pause):
        pass
    assert len(waits) == 3


def test_a_held_lock_is_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder touches its lock file while it holds it, so others see it alive."""
    monkeypatch.setattr(lock, "REFRESH_SECONDS", 0.05)
    repository = tmp_path / "repository"
    back_up(policy(write(tmp_path / "source" / "f", b"x").parent, repository))
    with lock.shared(repository):
        (held,) = (repository / "locks").glob("*.json")
        os.utime(held, (1.0, 1.0))
        time.sleep(0.5)
        assert held.stat().st_mtime > time.time() - 5


class LosesItsLock(RunningJob):
    """Removes its own lock file mid-job, as a collection that judged it stale would."""

    def __init__(self, repository: Path) -> None:
        super().__init__(pb.Job(id="j-lost", policy_id="nightly"))
        self.repository = repository

    def progress(self, total: int, done: int, files: int, read: int, written: int) -> None:
        super().progress(total, done, files, read, written)
        for path in (self.repository / "locks").glob("*.json"):
            path.unlink()


def test_a_backup_that_lost_its_lock_commits_nothing(tmp_path: Path) -> None:
    """If its lock was removed while it ran, the job fails instead of committing a point."""
    repository = tmp_path / "repository"
    source = write(tmp_path / "source" / "f", os.urandom(MIB)).parent
    first, _ = back_up(policy(source, repository))
    write(source / "g", os.urandom(MIB))
    job = LosesItsLock(repository)
    with pytest.raises(engine.BackupFailed, match="removed as stale while held"):
        engine.run_backup(backup_job(policy(source, repository)), job.id, job)
    summaries, _ = engine.Repository.open(repository).summaries()
    assert [point.id for point in summaries] == [first]
