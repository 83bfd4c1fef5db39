"""The backup chain from the command line: points, restore, verify, repair.

They read the repositories of the policies the agent of a data dir has applied, directly:
no running agent is needed, and the repository lock keeps them safe beside one.
"""

import time
from pathlib import Path

from .engine import Repository, repair, restore, verify
from .local import LocalCommandError
from .points import BackupChain

DAMAGED_EXIT = 3
NOTHING_EXIT = 2
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(count: int) -> str:
    size = float(count)
    for unit in UNITS:
        if size < 1024 or unit == UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def chain(data_dir: Path) -> BackupChain:
    if not (data_dir / "policies").is_dir():
        raise LocalCommandError(f"no agent state in {data_dir} (no policies/ there)")
    return BackupChain(data_dir)


def points(data_dir: Path, policy_id: str) -> int:
    backups = chain(data_dir)
    found = backups.summaries(policy_id)
    if not found:
        print("no restore points")
        return 0
    rows = [("ID", "POLICY", "COMPUTER", "CREATED (UTC)", "FILES", "SIZE", "ADDED", "STATE")]
    for repository, point in found:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(point.create_ns / 1e9))
        damaged = backups.damaged_files(repository, point.id)
        rows.append(
            (
                point.id,
                point.policy_id,
                point.computer or "-",
                created,
                str(point.file_count),
                human(point.total_bytes),
                human(point.added_bytes),
                f"damaged ({len(damaged)} files)" if damaged else "ok",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def restore_point(data_dir: Path, point_id: str, target: Path, subpath: str) -> int:
    repository = chain(data_dir).find(point_id)
    done = restore(repository, point_id, target, subpath)
    print(
        f"restored {done.files} files ({human(done.bytes)}), {done.directories} directories "
        f"and {done.symlinks} symlinks from {point_id} into {target}"
    )
    return 0


def verify_points(data_dir: Path, point_id: str) -> int:
    """Exit 0 healthy, 3 with damage, 2 with nothing to verify or a repository missing."""
    backups = chain(data_dir)
    checks: list[tuple[Repository, list[str] | None]]
    found = backups.find_repositories()
    if point_id:
        checks = [(backups.find(point_id), [point_id])]
    else:
        checks = [(repository, None) for repository, _ in found.repositories]
    problems: list[str] = []
    totals = [0, 0, 0, 0]
    for repository, point_ids in checks:
        result = verify(repository, point_ids, keep=backups.mine)
        problems.extend(result.problems)
        for index, count in enumerate(
            (len(result.points), result.files, result.chunks, result.bytes)
        ):
            totals[index] += count
    for problem in problems:
        print(f"damaged: {problem}")
    for missing in found.missing:
        print(f"missing: {missing}")
    verdict = f"{len(problems)} problems" if problems else "OK"
    if not problems and (found.missing or not totals[0]):
        verdict = "nothing to verify" if not totals[0] else "a repository is missing"
    print(
        f"verified {totals[0]} restore points, {totals[1]} files, {totals[2]} chunks "
        f"({human(totals[3])}) read back: {verdict}"
    )
    if problems:
        return DAMAGED_EXIT
    return NOTHING_EXIT if found.missing or not totals[0] else 0


def repair_repositories(data_dir: Path, policy_id: str) -> int:
    """Rebuilds each repository's index from its packs, then verifies: exit 0 if healthy."""
    found = chain(data_dir).find_repositories(policy_id)
    for missing in found.missing:
        print(f"missing: {missing}")
    if not found.repositories:
        print("nothing to repair")
        return NOTHING_EXIT
    healthy = not found.missing
    for repository, _ in found.repositories:
        rebuilt = repair(repository)
        for problem in rebuilt.problems:
            print(f"cannot rebuild: {problem}")
        after = verify(repository)
        for problem in after.problems:
            print(f"damaged: {problem}")
        healthy = healthy and not after.problems
        print(
            f"{repository.root}: index rebuilt from {rebuilt.packs} packs "
            f"({rebuilt.chunks} chunks); {len(after.points)} restore points "
            + ("verify OK" if not after.problems else f"{len(after.problems)} problems remain")
        )
    return 0 if healthy else DAMAGED_EXIT
