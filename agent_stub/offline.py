"""The backup chain from the command line: points, ls, restore, verify, repair.

They read the repositories of the policies the agent of a data dir has applied, directly:
no running agent is needed, and the repository lock keeps them safe beside one. Sizes
and moments read as backupctl shows them (backup.formats).
"""

import os
import stat
from pathlib import Path

from backup import formats

from .engine import Repository, RestoreRefused, repair, restore, verify
from .engine.manifest import DIRECTORY, FILE, SYMLINK, Entry
from .engine.restore import select
from .local import LocalCommandError
from .points import BackupChain

DAMAGED_EXIT = 3
# An existing file a restore would replace: how many of them the refusal names.
NAMED_CONFLICTS = 5
NOTHING_EXIT = 2
human = formats.size


def chain(data_dir: Path) -> BackupChain:
    if not (data_dir / "policies").is_dir():
        raise LocalCommandError(f"no agent state in {data_dir} (no policies/ there)")
    return BackupChain(data_dir)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, two spaces apart; nothing is ever cut."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def points(data_dir: Path, policy_id: str) -> int:
    backups = chain(data_dir)
    found = backups.summaries(policy_id)
    if not found:
        print("no restore points")
        return 0
    rows: list[tuple[str, ...]] = [
        ("ID", "POLICY", "COMPUTER", "CREATED", "FILES", "SIZE", "ADDED", "STATE")
    ]
    for repository, point in found:
        damaged = backups.damaged_files(repository, point.id)
        rows.append(
            (
                point.id,
                point.policy_id,
                point.computer or "-",
                formats.moment(point.create_ns / 1e9),
                str(point.file_count),
                human(point.total_bytes),
                human(point.added_bytes),
                f"damaged ({formats.plural(len(damaged), 'file')})" if damaged else "ok",
            )
        )
    _print_rows(rows)
    return 0


def _entries(data_dir: Path, point_id: str, subpath: str) -> tuple[Repository, list[Entry]]:
    repository = chain(data_dir).find(point_id)
    return repository, select(repository.read_point(point_id).entries, subpath, point_id)


KIND_LETTER = {DIRECTORY: "d", FILE: "-", SYMLINK: "l"}


def list_point(data_dir: Path, point_id: str, subpath: str) -> int:
    """`ls POINT [PATH]`: the point's entries (at or below PATH), as `ls -l` would show them."""
    _, entries = _entries(data_dir, point_id, subpath)
    rows: list[tuple[str, ...]] = []
    for entry in entries:
        mode = KIND_LETTER.get(entry.kind, "?") + stat.filemode(entry.mode)[1:]
        name = f"{entry.path} -> {entry.target}" if entry.kind == SYMLINK else entry.path
        size = human(entry.size) if entry.kind == FILE else ""
        rows.append((mode, size, formats.moment(entry.mtime_ns / 1e9), name))
    _print_rows(rows)
    return 0


def _conflicts(entries: list[Entry], target: Path) -> list[str]:
    """The files and symlinks a restore would replace under `target` (directories merge)."""
    return [
        entry.path
        for entry in entries
        if entry.kind != DIRECTORY and os.path.lexists(target / entry.path)
    ]


def restore_point(
    data_dir: Path,
    point_id: str,
    target: Path,
    subpath: str,
    dry_run: bool = False,
    overwrite: bool = False,
) -> int:
    repository, entries = _entries(data_dir, point_id, subpath)
    conflicts = _conflicts(entries, target)
    if dry_run:
        files = [entry for entry in entries if entry.kind == FILE]
        for entry in entries:
            replaced = " (replaces an existing one)" if entry.path in conflicts else ""
            print(f"would restore {target / entry.path}{replaced}")
        print(
            f"would restore {formats.plural(len(files), 'file')} "
            f"({human(sum(entry.size for entry in files))}) from {point_id} into {target}; "
            f"{formats.plural(len(conflicts), 'existing file')} in the way"
        )
        return 0
    if conflicts and not overwrite:
        named = ", ".join(conflicts[:NAMED_CONFLICTS])
        more = len(conflicts) - NAMED_CONFLICTS
        named += f" and {more} more" if more > 0 else ""
        raise RestoreRefused(
            f"refused: {formats.plural(len(conflicts), 'file')} already in {target} "
            f"({named}); give --overwrite to replace them, or restore elsewhere"
        )
    done = restore(repository, point_id, target, subpath)
    print(
        f"restored {formats.plural(done.files, 'file')} ({human(done.bytes)}), "
        f"{formats.plural(done.directories, 'directory', 'directories')} and "
        f"{formats.plural(done.symlinks, 'symlink')} from {point_id} into {target}"
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
    verdict = formats.plural(len(problems), "problem") if problems else "OK"
    if not problems and (found.missing or not totals[0]):
        verdict = "nothing to verify" if not totals[0] else "a repository is missing"
    print(
        f"verified {formats.plural(totals[0], 'restore point')}, "
        f"{formats.plural(totals[1], 'file')}, {formats.plural(totals[2], 'chunk')} "
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
