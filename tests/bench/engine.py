"""The backup engine against tar: a generated ~1 GiB tree, backed up in full, then again
after 1% of it (by bytes) was rewritten.

MB/s is the tree's size over the wall time of each run; tar's figure is
`tar -cf - TREE | cat > /dev/null` of the same tree in the same run (the `cat` keeps GNU
tar from skipping the reads when it sees /dev/null). The tree was just written, so every
run reads from the page cache (the tree is flushed to disk first, so the backup's own
fsyncs do not wait for it): this measures the engine's cost, not the disk's reads.
"""

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agent_stub import engine
from agent_stub.jobs import RunningJob
from agent_stub.specs import backup_job
from backup.v1 import resources_pb2 as pb

MIB = 1024 * 1024
# (count, size): large, medium and small files, a third of the gibibyte each, about.
LAYOUT = [(48, 8 * MIB), (512, 768 * 1024), (4096, 64 * 1024)]
CHANGED_FRACTION = 0.01
SEED = 20261125


def _content(rng: random.Random, size: int, compressible: bool) -> bytes:
    """Half the files are random (incompressible), half hex text (about 2:1 with zstd)."""
    if compressible:
        return rng.randbytes(size // 2).hex().encode()
    return rng.randbytes(size)


def _generate(root: Path, rng: random.Random) -> list[Path]:
    files = []
    for count, size in LAYOUT:
        for index in range(count):
            path = root / f"d{index % 16:02d}" / f"{size // 1024}k-{index:04d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_content(rng, size, compressible=index % 2 == 1))
            files.append(path)
    return files


def _change(files: list[Path], total: int, rng: random.Random) -> int:
    """Rewrites whole files, chosen at random, until CHANGED_FRACTION of the bytes changed."""
    changed = 0
    for path in rng.sample(files, len(files)):
        if changed >= total * CHANGED_FRACTION:
            break
        size = path.stat().st_size
        path.write_bytes(_content(rng, size, compressible=rng.random() < 0.5))
        changed += size
    return changed


def _tar_seconds(tree: Path) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run(
            f"tar -cf - -C {tree.parent} {tree.name} | cat > /dev/null", shell=True, check=True
        )
        best = min(best, time.perf_counter() - started)
    return best


def _tar_to_file_seconds(tree: Path, archive: Path) -> float:
    """tar writing its archive to a file and fsyncing it: a durable write, for context."""
    started = time.perf_counter()
    subprocess.run(["tar", "-cf", str(archive), "-C", str(tree.parent), tree.name], check=True)
    fd = os.open(archive, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    archive.unlink()
    return seconds


def _backup(policy: pb.BackupPolicy) -> tuple[float, pb.Job]:
    job = RunningJob(pb.Job(id=f"bench-{time.monotonic_ns()}", policy_id=policy.id))
    started = time.perf_counter()
    engine.run_backup(backup_job(policy), job.id, job)
    return time.perf_counter() - started, job.snapshot()


def _size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _measure() -> dict[str, object]:
    rng = random.Random(SEED)
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        tree = work / "tree"
        files = _generate(tree, rng)
        total = sum(path.stat().st_size for path in files)
        policy = pb.BackupPolicy(
            id="bench", source_paths=[str(tree)], repository=str(work / "repository")
        )
        # The backup's fsyncs would otherwise queue behind the writeback of the tree just
        # written, which tar never waits for.
        os.sync()
        tar_full = _tar_seconds(tree)
        tar_file = _tar_to_file_seconds(tree, work / "tree.tar")
        os.sync()
        full_seconds, full = _backup(policy)
        changed = _change(files, total, rng)
        os.sync()
        tar_after = _tar_seconds(tree)
        incremental_seconds, incremental = _backup(policy)
        repository = _size(work / "repository")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = total / 1e6
    tar = mb / min(tar_full, tar_after)
    figures: dict[str, object] = {
        "tree_bytes": total,
        "files": len(files),
        "changed_bytes": changed,
        "tar_mb_per_s": round(tar, 1),
        "full_mb_per_s": round(mb / full_seconds, 1),
        "full_vs_tar": round(mb / full_seconds / tar, 3),
        "incremental_mb_per_s": round(mb / incremental_seconds, 1),
        "incremental_vs_tar": round(mb / incremental_seconds / tar, 3),
        "tar_to_file_fsynced_mb_per_s": round(mb / tar_file, 1),
        "tar_to_file_fsynced_vs_tar": round(mb / tar_file / tar, 3),
        "full_seconds": round(full_seconds, 2),
        "incremental_seconds": round(incremental_seconds, 2),
        "incremental_bytes_read": incremental.bytes_read,
        "incremental_bytes_written": incremental.bytes_written,
        "full_bytes_written": full.bytes_written,
        "repository_bytes": repository,
        "repository_vs_source": round(repository / total, 3),
        "cpus": os.cpu_count(),
    }
    _print(figures)
    return figures


def _print(f: dict[str, object]) -> None:
    tree = int(f["tree_bytes"])  # type: ignore[call-overload]
    print(f"\nengine: {tree / MIB:.0f} MiB in {f['files']} files, half random, half hex text")
    print(f"  {'run':<34}{'MB/s':>9}{'vs tar':>9}{'seconds':>9}")
    print(f"  {'tar -cf - TREE | cat > /dev/null':<34}{f['tar_mb_per_s']:>9}{'1.000':>9}")
    print(
        f"  {'tar -cf FILE TREE + fsync (context)':<34}{f['tar_to_file_fsynced_mb_per_s']:>9}"
        f"{f['tar_to_file_fsynced_vs_tar']:>9}"
    )
    print(
        f"  {'full backup':<34}{f['full_mb_per_s']:>9}{f['full_vs_tar']:>9}{f['full_seconds']:>9}"
    )
    changed = int(f["changed_bytes"]) / MIB  # type: ignore[call-overload]
    label = f"incremental ({changed:.0f} MiB rewritten)"
    print(
        f"  {label:<34}{f['incremental_mb_per_s']:>9}{f['incremental_vs_tar']:>9}"
        f"{f['incremental_seconds']:>9}"
    )
    read = int(f["incremental_bytes_read"]) / MIB  # type: ignore[call-overload]
    written = int(f["incremental_bytes_written"]) / MIB  # type: ignore[call-overload]
    print(f"  incremental read {read:.1f} MiB and wrote {written:.1f} MiB")
    repository = int(f["repository_bytes"]) / MIB  # type: ignore[call-overload]
    print(
        f"  repository {repository:.0f} MiB for {tree / MIB:.0f} MiB of source "
        f"({f['repository_vs_source']}x; after both runs)"
    )


async def run() -> dict[str, object]:
    import asyncio

    return await asyncio.to_thread(_measure)
