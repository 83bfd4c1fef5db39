"""The engine's backups, called directly: round trip, incremental, dedup, compression."""

import os
import time
from pathlib import Path

import pytest
from engine_support import (
    MIB,
    back_up,
    chunk_files,
    make_tree,
    policy,
    restored_source,
    snapshot,
    text,
    write,
)

from agent_stub import engine
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from backup.v1 import resources_pb2 as pb


def proc_bytes_read() -> int:
    """Bytes this process has read through read() so far, as the kernel counts them."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_round_trip_restores_every_byte_mode_mtime_and_link(tmp_path: Path) -> None:
    """Backup then restore reproduces the tree: empty files, deep paths, symlinks, odd names."""
    source = make_tree(tmp_path / "source")
    point_id, job = back_up(policy(source, tmp_path / "repository"))
    repository = engine.Repository.open(tmp_path / "repository")
    done = engine.restore(repository, point_id, tmp_path / "target")
    assert snapshot(restored_source(tmp_path / "target", source)) == snapshot(source)
    assert done.files == job.files_done == 10
    assert job.bytes_total == job.bytes_done == job.bytes_read == done.bytes


def test_a_source_path_that_is_a_symlink_to_a_file_backs_up_the_file(tmp_path: Path) -> None:
    """Naming a symlink to a file as the source backs up that file's bytes under the link's name."""
    data = os.urandom(3 * MIB)
    real = write(tmp_path / "real" / "database.dump", data)
    link = tmp_path / "latest.dump"
    link.symlink_to(real)
    point_id, job = back_up(policy(link, tmp_path / "repository"))
    assert job.warnings == [] and job.files_done == 1
    engine.restore(engine.Repository.open(tmp_path / "repository"), point_id, tmp_path / "target")
    assert restored_source(tmp_path / "target", link).read_bytes() == data


def test_incremental_run_reads_only_changed_files(tmp_path: Path) -> None:
    """Unchanged files are not re-read: the kernel's read counter and their chunks prove it."""
    source = tmp_path / "source"
    for index in range(8):
        write(source / f"file-{index}", os.urandom(2 * MIB))
    backup_policy = policy(source, tmp_path / "repository")
    back_up(backup_policy)
    write(source / "file-3", os.urandom(2 * MIB))
    # Same size, mtime and inode but other bytes: if the engine read this file again,
    # the new restore point would hold the garbage instead of the original.
    unchanged = source / "file-5"
    original, info = unchanged.read_bytes(), unchanged.stat()
    with open(unchanged, "r+b") as out:
        out.write(b"\0" * MIB)
    os.utime(unchanged, ns=(info.st_atime_ns, info.st_mtime_ns))
    before = proc_bytes_read()
    point_id, job = back_up(backup_policy)
    read = proc_bytes_read() - before
    assert job.bytes_read == 2 * MIB
    assert read < 2 * MIB + MIB, f"the process read {read} bytes for a 2 MiB change"
    repository = engine.Repository.open(tmp_path / "repository")
    engine.restore(repository, point_id, tmp_path / "target")
    restored = restored_source(tmp_path / "target", source)
    assert (restored / "file-5").read_bytes() == original
    assert (restored / "file-3").read_bytes() == (source / "file-3").read_bytes()


def test_changed_file_writes_only_chunks_the_repository_lacks(tmp_path: Path) -> None:
    """An edit in place and an insertion at the start of a large file each add about one chunk."""
    source = tmp_path / "source"
    big = write(source / "big", os.urandom(32 * MIB))
    backup_policy = policy(source, tmp_path / "repository")
    _, first = back_up(backup_policy)
    with open(big, "r+b") as out:
        out.seek(16 * MIB)
        out.write(os.urandom(4096))
    _, edited = back_up(backup_policy)
    big.write_bytes(b"inserted bytes shift everything after them" + big.read_bytes())
    _, shifted = back_up(backup_policy)
    assert first.bytes_written > 32 * MIB
    assert edited.bytes_read == 32 * MIB
    assert edited.bytes_written < 8 * MIB
    assert shifted.bytes_written < 8 * MIB


def test_identical_files_across_policies_are_stored_once(tmp_path: Path) -> None:
    """Two policies backing up the same bytes into one repository share every chunk."""
    repository = tmp_path / "repository"
    content = os.urandom(5 * MIB)
    write(tmp_path / "a" / "data", content)
    write(tmp_path / "b" / "copy-1", content)
    write(tmp_path / "b" / "copy-2", content)
    _, first = back_up(policy(tmp_path / "a", repository, "policy-a"))
    chunks = chunk_files(repository)
    _, second = back_up(policy(tmp_path / "b", repository, "policy-b"))
    assert first.bytes_written >= 5 * MIB
    assert second.bytes_read == 10 * MIB
    assert second.bytes_written == 0
    assert chunk_files(repository) == chunks


def test_chunks_are_compressed_only_where_it_pays(tmp_path: Path) -> None:
    """Text is stored zstd-compressed, random bytes raw; both restore the same."""
    source = tmp_path / "source"
    write(source / "text", text(4 * MIB, 7))
    write(source / "random", os.urandom(4 * MIB))
    repository = tmp_path / "repository"
    back_up(policy(source, repository))
    headers = [path.read_bytes()[:1] for path in (repository / "chunks").glob("*/*")]
    stored = sum(path.stat().st_size for path in (repository / "chunks").glob("*/*"))
    assert b"\x00" in headers and b"\x01" in headers
    assert stored < 4 * MIB + 3 * MIB


def test_missing_source_path_fails_the_job_clearly(tmp_path: Path) -> None:
    """A source path that does not exist fails the job, naming the path, and writes nothing."""
    missing = tmp_path / "no-such-dir"
    with pytest.raises(engine.BackupFailed, match=f"source path {missing} does not exist"):
        back_up(policy(missing, tmp_path / "repository"))
    assert not (tmp_path / "repository").exists()


def test_repository_path_holding_other_files_is_refused(tmp_path: Path) -> None:
    """A non-empty directory that is not a repository is never written into."""
    write(tmp_path / "home" / "precious.txt", b"keep me")
    write(tmp_path / "source" / "file", b"data")
    with pytest.raises(engine.BackupFailed, match="not a backup repository"):
        back_up(policy(tmp_path / "source", tmp_path / "home"))
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["precious.txt"]


def test_special_files_are_skipped_with_one_warning(tmp_path: Path) -> None:
    """A FIFO is not read (that could block forever) and the job says it skipped it."""
    source = tmp_path / "source"
    write(source / "file", b"data")
    os.mkfifo(source / "pipe")
    point_id, job = back_up(policy(source, tmp_path / "repository"))
    assert point_id and job.files_done == 1
    assert len(job.warnings) == 1 and str(source / "pipe") in job.warnings[0]


def test_read_limit_is_kept(tmp_path: Path) -> None:
    """With throttle_bytes_per_second, reading 2 MiB at 4 MiB/s takes about half a second."""
    write(tmp_path / "source" / "file", os.urandom(2 * MIB))
    started = time.monotonic()
    back_up(policy(tmp_path / "source", tmp_path / "repository", throttle_bytes_per_second=4 * MIB))
    assert time.monotonic() - started >= 0.4


class GrowsFileOnFirstRead(RunningJob):
    """The real job control, which also appends to a file right after the first read."""

    def __init__(self, path: Path, data: bytes) -> None:
        super().__init__(pb.Job(id="j-grows", policy_id="nightly"))
        self.path, self.data, self.appended = path, data, False

    def progress(self, total: int, done: int, files: int, read: int, written: int) -> None:
        super().progress(total, done, files, read, written)
        if read and not self.appended:
            with open(self.path, "ab") as out:
                out.write(self.data)
            self.appended = True


def test_file_growing_while_read_is_stored_as_read_and_read_again(tmp_path: Path) -> None:
    """A file that grows during its read keeps every byte read, and is re-read next time."""
    source = tmp_path / "source"
    original, appended = os.urandom(MIB), os.urandom(MIB)
    grows = write(source / "log", original)
    backup_policy = policy(source, tmp_path / "repository", throttle_bytes_per_second=4 * MIB)
    job = GrowsFileOnFirstRead(grows, appended)
    point_id = engine.run_backup(backup_job(backup_policy), job.id, job)
    assert job.appended and job.snapshot().bytes_read == 2 * MIB
    engine.restore(engine.Repository.open(tmp_path / "repository"), point_id, tmp_path / "t")
    assert (restored_source(tmp_path / "t", source) / "log").read_bytes() == original + appended
    _, again = back_up(policy(source, tmp_path / "repository"))
    assert again.bytes_read == 2 * MIB
