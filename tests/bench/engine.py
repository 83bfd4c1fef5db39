"""The backup engine beside restic and borg, in one run on the same trees.

Two generated datasets: `mixed`, about 1 GiB of large, medium and small files (half random,
half hex text), and `small`, 100,000 files of 1-8 KB. For each: a full backup, then an
incremental one after rewriting 1% of the files, a restore of the newest point and a
verify that reads every chunk back, by each tool. Sizes can be reduced for a quick try:
BENCH_ENGINE_MIXED_MIB (default 1024) and BENCH_ENGINE_SMALL_FILES (default 100000).

Every operation runs as its own process (the project's through engine_job.py), timed by
wall clock, its peak RSS from wait4. The trees were just written and flushed, so reads come
from the page cache: this measures the tools, not the disk. restic (0.14: always
encrypted, zstd) and borg (1.2, `--encryption none`, lz4) are skipped with a line where
they are not installed. fsync calls are counted for the project (os.fsync wrapped) and,
where strace is installed, for restic and borg (strace -f -c, in a separate full backup
so tracing does not slow the timed one).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MIB = 1024 * 1024
SEED = 20261201
CHANGED_FRACTION = 0.01
PASSWORD = "bench"
TOOLS = ("project", "restic", "borg")


def _mixed(root: Path, rng: random.Random, mib: int) -> list[Path]:
    """A third of the bytes each in 8 MiB, 768 KiB and 64 KiB files."""
    layout = [(max(1, 48 * mib // 1024), 8 * MIB), (max(1, 512 * mib // 1024), 768 * 1024)]
    layout.append((max(1, 4096 * mib // 1024), 64 * 1024))
    files = []
    for count, size in layout:
        for index in range(count):
            path = root / f"d{index % 16:02d}" / f"{size // 1024}k-{index:04d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_content(rng, size, index % 2 == 1))
            files.append(path)
    return files


def _small(root: Path, rng: random.Random, count: int) -> list[Path]:
    """`count` files of 1-8 KB in directories of 1,000."""
    files = []
    for index in range(count):
        path = root / f"d{index // 1000:03d}" / f"f{index:06d}.txt"
        if index % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(rng, rng.randint(1024, 8192), index % 2 == 1))
        files.append(path)
    return files


def _content(rng: random.Random, size: int, compressible: bool) -> bytes:
    if compressible:
        return rng.randbytes(size // 2).hex().encode()
    return rng.randbytes(size)


def _change(files: list[Path], rng: random.Random) -> int:
    """Rewrites 1% of the files (at least one) with new content of the same size."""
    chosen = rng.sample(files, max(1, int(len(files) * CHANGED_FRACTION)))
    for path in chosen:
        path.write_bytes(_content(rng, path.stat().st_size, rng.random() < 0.5))
    return len(chosen)


def _run(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and stdout of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {err.strip()[-400:]}")
    return seconds, usage.ru_maxrss * 1024, out


class _Tool:
    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.repository = work / f"repo-{name}"
        self.env = {
            **os.environ,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            "BORG_BASE_DIR": str(work / "borg-base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}",
        }
        self.point = ""
        self.runs = 0

    def init(self) -> None:
        if self.name == "restic":
            _run(["restic", "init", "--repo", str(self.repository)], self.env)
        elif self.name == "borg":
            _run(["borg", "init", "--encryption", "none", str(self.repository)], self.env)

    def backup_command(self, tree: Path) -> list[str]:
        self.runs += 1
        if self.name == "project":
            job = str(HERE / "engine_job.py")
            return [sys.executable, job, "backup", str(self.repository), str(tree)]
        if self.name == "restic":
            return ["restic", "-r", str(self.repository), "backup", "--quiet", str(tree)]
        return ["borg", "create", f"{self.repository}::run{self.runs}", str(tree)]

    def backup(self, tree: Path) -> dict[str, object]:
        seconds, rss, out = _run(self.backup_command(tree), self.env)
        figures: dict[str, object] = {"seconds": round(seconds, 2), "rss_mb": round(rss / 1e6)}
        if self.name == "project":
            reported = json.loads(out)
            self.point = reported["point"]
            figures["fsyncs"] = reported["fsyncs"]
        return figures

    def restore(self, target: Path) -> float:
        target.mkdir()
        if self.name == "project":
            job = str(HERE / "engine_job.py")
            command = [
                sys.executable,
                job,
                "restore",
                str(self.repository),
                self.point,
                str(target),
            ]
        elif self.name == "restic":
            command = [
                "restic",
                "-r",
                str(self.repository),
                "restore",
                "latest",
                "--target",
                str(target),
            ]
        else:
            command = ["borg", "extract", f"{self.repository}::run{self.runs}"]
        seconds, _, _ = _run(command, self.env, cwd=target)
        shutil.rmtree(target)
        return seconds

    def verify(self) -> float:
        if self.name == "project":
            command = [sys.executable, str(HERE / "engine_job.py"), "verify", str(self.repository)]
        elif self.name == "restic":
            command = ["restic", "-r", str(self.repository), "check", "--read-data"]
        else:
            command = ["borg", "check", "--verify-data", str(self.repository)]
        return _run(command, self.env)[0]

    def traced_fsyncs(self, tree: Path, work: Path) -> int | None:
        """fsync calls of a full backup into a fresh repository, counted by strace."""
        if shutil.which("strace") is None:
            return None
        saved, self.repository = self.repository, work / f"traced-{self.name}"
        try:
            self.init()
            summary = work / "strace.txt"
            command = ["strace", "-f", "-c", "-o", str(summary), "-e", "trace=fsync,fdatasync"]
            _run(command + self.backup_command(tree), self.env)
            counts = 0
            for line in summary.read_text().splitlines():
                fields = line.split()
                if fields and fields[-1] in ("fsync", "fdatasync"):
                    counts += int(fields[3])
            return counts
        finally:
            shutil.rmtree(self.repository, ignore_errors=True)
            self.repository = saved


def _available() -> list[str]:
    found = ["project"]
    for name in ("restic", "borg"):
        if shutil.which(name):
            found.append(name)
        else:
            print(
                f"engine: {name} is not installed: skipped (apt-get install {name if name == 'restic' else 'borgbackup'})"
            )
    return found


def _dataset(
    name: str, tree: Path, files: list[Path], tools: list[str], work: Path
) -> dict[str, object]:
    rng = random.Random(SEED + 1)
    os.sync()
    subprocess.run(
        f"tar -cf - -C {tree.parent} {tree.name} | cat > /dev/null", shell=True, check=True
    )
    results: dict[str, dict[str, object]] = {}
    runners = {tool: _Tool(tool, work / name) for tool in tools}
    for tool, runner in runners.items():
        runner.repository.parent.mkdir(parents=True, exist_ok=True)
        runner.init()
        results[tool] = {"full": runner.backup(tree)}
        os.sync()
    changed = _change(files, rng)
    os.sync()
    for tool, runner in runners.items():
        results[tool]["incremental"] = runner.backup(tree)
        results[tool]["restore_seconds"] = round(runner.restore(work / name / f"target-{tool}"), 2)
        results[tool]["verify_seconds"] = round(runner.verify(), 2)
        if tool != "project":
            results[tool]["full"]["fsyncs"] = runner.traced_fsyncs(tree, work / name)  # type: ignore[index]
        os.sync()
    total = sum(path.stat().st_size for path in files)
    baseline = results["project"]["baseline_rss_mb"] = _baseline_rss(work)
    full_rss = results["project"]["full"]["rss_mb"]  # type: ignore[index]
    results["project"]["bytes_per_file"] = round((full_rss - baseline) * 1e6 / len(files))
    figures = {"files": len(files), "bytes": total, "changed_files": changed, "tools": results}
    _print(name, figures)
    return figures


def _baseline_rss(work: Path) -> int:
    """The project's RSS backing up one small file: what the interpreter and imports cost."""
    tree = work / "one" / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "file").write_bytes(b"x")
    runner = _Tool("project", work / "one")
    rss = runner.backup(tree)["rss_mb"]
    assert isinstance(rss, int)
    return rss


def _print(name: str, figures: dict[str, object]) -> None:
    print(
        f"\nengine, dataset {name}: {figures['files']} files, "
        f"{int(figures['bytes']) / MIB:.0f} MiB; incremental after rewriting "  # type: ignore[call-overload]
        f"{figures['changed_files']} files"
    )
    header = ("tool", "full s", "incr s", "restore s", "verify s", "RSS MB", "fsyncs")
    print("  " + "".join(f"{cell:>11}" for cell in header))
    tools: dict[str, dict[str, object]] = figures["tools"]  # type: ignore[assignment]
    for tool, result in tools.items():
        full: dict[str, object] = result["full"]  # type: ignore[assignment]
        incremental: dict[str, object] = result["incremental"]  # type: ignore[assignment]
        rss = max(int(full["rss_mb"]), int(incremental["rss_mb"]))  # type: ignore[call-overload]
        cells = (
            tool,
            full["seconds"],
            incremental["seconds"],
            result["restore_seconds"],
            result["verify_seconds"],
            rss,
            full.get("fsyncs") if full.get("fsyncs") is not None else "-",
        )
        print("  " + "".join(f"{cell!s:>11}" for cell in cells))
    project = tools["project"]
    for other in ("restic", "borg"):
        if other in tools:
            for run in ("full", "incremental"):
                ours = project[run]["seconds"]  # type: ignore[index]
                theirs = tools[other][run]["seconds"]  # type: ignore[index]
                print(f"  {run} project / {other}: {ours / theirs:.2f}")
    print(f"  project memory per file: {project['bytes_per_file']} bytes")


async def run() -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    tools = _available()
    rng = random.Random(SEED)
    results: dict[str, object] = {"cpus": os.cpu_count()}
    try:
        mixed_mib = int(os.environ.get("BENCH_ENGINE_MIXED_MIB", "1024"))
        small_files = int(os.environ.get("BENCH_ENGINE_SMALL_FILES", "100000"))
        tree = work / "mixed" / "tree"
        results["mixed"] = _dataset("mixed", tree, _mixed(tree, rng, mixed_mib), tools, work)
        shutil.rmtree(work / "mixed")
        tree = work / "small" / "tree"
        results["small"] = _dataset("small", tree, _small(tree, rng, small_files), tools, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
