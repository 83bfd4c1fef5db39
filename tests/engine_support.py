"""Helpers for the engine's tests: real trees on disk, real jobs, real agent processes."""

import hashlib
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

from agent_stub import engine
from agent_stub.engine.retention import referenced_chunks
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from backup.v1 import resources_pb2 as pb

from conftest import Process

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# A name that is not UTF-8: Linux allows any bytes but '/' and NUL.
NOT_UTF8 = os.fsdecode(b"caf\xe9-latin1.txt")


def write(path: Path, data: bytes, mtime_ns: int | None = None, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def text(size: int, seed: int) -> bytes:
    """Compressible bytes unique to `seed`: hex digits (4 bits of entropy per byte)."""
    return random.Random(seed).randbytes((size + 1) // 2).hex().encode()[:size]


def make_tree(root: Path) -> Path:
    """A tree with every kind of thing a restore must get right."""
    write(root / "empty", b"")
    write(root / "docs" / "notes.txt", b"alpha\n", mtime_ns=1_600_000_000_123_456_789)
    write(root / "docs" / "random.bin", os.urandom(3 * MIB + 17))
    write(root / "docs" / "text.log", text(2 * MIB, 1))
    write(root / "docs" / "same-as-text.log", text(2 * MIB, 1))
    write(root / "bin" / "tool", b"#!/bin/sh\necho hi\n", mode=0o755)
    write(root / "private" / "key", b"secret\n", mode=0o600)
    (root / "private").chmod(0o700)
    write(root / "ünïcødé — 日本語 🎉.txt", "ünïcødé\n".encode())
    write(root / NOT_UTF8, b"latin-1 name\n")
    deep = root / "deep"
    for level in range(40):
        deep = deep / f"level-{level}"
    write(deep / "bottom.txt", b"deep down\n")
    (root / "empty-dir").mkdir()
    (root / "links").mkdir()
    os.symlink("../docs/notes.txt", root / "links" / "relative")
    os.symlink("/etc/hostname", root / "links" / "absolute")
    os.symlink("nowhere", root / "links" / "dangling")
    os.symlink("../docs", root / "links" / "to-dir")
    os.utime(
        root / "links" / "relative", ns=(1_500_000_000_000_000_000,) * 2, follow_symlinks=False
    )
    for directory in sorted(
        (p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()),
        key=lambda p: -len(p.parts),
    ):
        os.utime(directory, ns=(1_400_000_000_000_000_000,) * 2)
    return root


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must reproduce: kind, mode, mtime, and content or target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory, name)
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("symlink", os.readlink(path), info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[relative] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, digest)
    return found


def policy(
    source: Path | list[Path], repository: Path, policy_id: str = "nightly", **fields: object
) -> pb.BackupPolicy:
    sources = source if isinstance(source, list) else [source]
    return pb.BackupPolicy(
        id=policy_id,
        name=policy_id,
        source_paths=[str(path) for path in sources],
        repository=str(repository),
        **fields,  # type: ignore[arg-type]
    )


def back_up(backup_policy: pb.BackupPolicy) -> tuple[str, pb.Job]:
    """Runs one job in this process, the way the agent's job runner does."""
    job = RunningJob(pb.Job(id=f"j-{os.urandom(4).hex()}", policy_id=backup_policy.id))
    point_id = engine.run_backup(backup_job(backup_policy), job.id, job)
    return point_id, job.snapshot()


def restored_source(target: Path, source: Path) -> Path:
    """Where a restore into `target` puts what was at `source`."""
    return target / str(source).lstrip("/")


def chunk_files(repository: Path) -> set[str]:
    """Every chunk stored, as a file of its own or in a pack."""
    return set(engine.Repository.open(repository).chunk_names())


def unreferenced_chunks(repository: Path) -> set[str]:
    return chunk_files(repository) - referenced_chunks(engine.Repository.open(repository))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs `python -m agent_stub ARGS` the way a person would."""
    return subprocess.run(
        [sys.executable, "-m", "agent_stub", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def start_agent_process(
    data_dir: Path, prefix: list[str] | None = None, name: str = "agent"
) -> Process:
    """A real agent in its own process on port 0, once it listens; `stop()` is kill -9."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["agent_stub", "--listen", "127.0.0.1:0", "--name", name, "--data-dir", str(data_dir)]
    agent = Process(args, data_dir.parent / f"{name}.log", prefix)
    agent.wait_listening()
    return agent
