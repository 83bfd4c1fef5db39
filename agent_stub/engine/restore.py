"""Restoring a restore point, or one path in it, into a target directory.

Every selected entry is checked before anything is written: a path that is absolute,
empty, or has '..' is refused, and so is one that goes through a symlink the same point
restores, so a crafted or damaged manifest cannot write outside the target. While
writing, directories are made one component at a time and an existing symlink is never
followed; each file is written under a temporary name, checked, then renamed into place,
so a damaged chunk never replaces a good file that was there; symlinks come last; modes
and mtimes of directories are set after their contents. Owners are restored when running
as root. Every chunk is checked against its SHA-256 name as it is read.
"""

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from . import lock
from .errors import DamagedData, RestoreRefused
from .manifest import DIRECTORY, FILE, SYMLINK, Entry, path_problem
from .repository import Repository


@dataclass
class Restored:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0


def select(entries: list[Entry], subpath: str, point_id: str) -> list[Entry]:
    """The entries at or below `subpath` (all when empty), each checked to stay inside."""
    wanted = subpath.strip("/")
    if wanted:
        problem = path_problem(wanted)
        if problem:
            raise RestoreRefused(f"--path {subpath!r} {problem}")
        entries = [e for e in entries if e.path == wanted or e.path.startswith(wanted + "/")]
        if not entries:
            raise RestoreRefused(f"restore point {point_id} holds nothing at {subpath}")
    symlinks = {entry.path for entry in entries if entry.kind == SYMLINK}
    for entry in entries:
        problem = path_problem(entry.path)
        if problem:
            raise RestoreRefused(
                f"refused: restore point {point_id} has an entry whose path {problem} "
                f"({entry.path[:120]!r}); it could write outside the target"
            )
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in symlinks:
                raise RestoreRefused(
                    f"refused: restore point {point_id} has {entry.path[:120]!r} below its "
                    f"own symlink {'/'.join(parts[:depth])!r}; it could write outside the target"
                )
    return entries


class _Target:
    """Writes into one target directory without ever leaving it."""

    def __init__(self, root: Path, repository: Repository, point_id: str) -> None:
        self.root = root
        self.repository = repository
        self.point_id = point_id
        self.ready: set[str] = {""}
        self.as_root = os.geteuid() == 0

    def directory(self, relative: str) -> Path:
        """The directory inside the target, made as needed, never through a symlink."""
        current = ""
        for part in relative.split("/") if relative else []:
            current = f"{current}/{part}" if current else part
            if current in self.ready:
                continue
            path = self.root / current
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path)
            else:
                if not stat.S_ISDIR(info.st_mode):
                    raise RestoreRefused(
                        f"{path} exists and is not a directory (a symlink is never followed)"
                    )
            self.ready.add(current)
        return self.root / relative if relative else self.root

    def _owner(self, path: Path | int, entry: Entry) -> None:
        if self.as_root:
            if isinstance(path, int):
                os.fchown(path, entry.uid, entry.gid)
            else:
                os.lchown(path, entry.uid, entry.gid)

    def file(self, entry: Entry) -> int:
        parent, name = os.path.split(entry.path)
        directory = self.directory(parent)
        staged = directory / f".{name[:200]}.restoring-{secrets.token_hex(4)}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                written = 0
                for chunk in entry.chunks:
                    data = self.repository.read_chunk(chunk)
                    out.write(data)
                    written += len(data)
                if written != entry.size:
                    raise DamagedData(
                        f"file {entry.path} in restore point {self.point_id}",
                        f"its chunks hold {written} bytes, the manifest says {entry.size}",
                    )
                out.flush()
                self._owner(out.fileno(), entry)
                os.fchmod(out.fileno(), entry.mode)
                os.utime(out.fileno(), ns=(entry.mtime_ns, entry.mtime_ns))
            os.rename(staged, directory / name)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return written

    def symlink(self, entry: Entry) -> None:
        parent, name = os.path.split(entry.path)
        path = self.directory(parent) / name
        if os.path.lexists(path):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise RestoreRefused(f"{path} is a directory; the restore point has a symlink")
            path.unlink()
        os.symlink(entry.target, path)
        self._owner(path, entry)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def finish_directory(self, entry: Entry) -> None:
        path = self.directory(entry.path)
        self._owner(path, entry)
        os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


FILES_SHOWN = 5


def damaged_files(repository: Repository, entries: list[Entry]) -> list[str]:
    """The files that need data verify found damaged and no backup has healed yet."""
    bad = repository.damaged_chunks
    if not bad:
        return []
    return [entry.path for entry in entries if any(name in bad for name in entry.chunks)]


def refuse_damaged(repository: Repository, point_id: str, entries: list[Entry]) -> None:
    """DamagedData naming the files, when some need data known to be damaged."""
    unrestorable = damaged_files(repository, entries)
    if unrestorable:
        shown = ", ".join(unrestorable[:FILES_SHOWN])
        more = len(unrestorable) - FILES_SHOWN
        raise DamagedData(
            f"restore point {point_id}",
            f"{len(unrestorable)} files need damaged data that no backup has healed: {shown}"
            + (f" and {more} more" if more > 0 else ""),
        )


def restore(repository: Repository, point_id: str, target: Path, subpath: str = "") -> Restored:
    """Restores the point (or `subpath` in it) under `target`, recreating stored paths.

    Refused before writing anything when files of it need data known to be damaged."""
    manifest = repository.read_point(point_id)
    entries = select(manifest.entries, subpath, point_id)
    done = Restored()
    try:
        target.mkdir(parents=True, exist_ok=True)
        writer = _Target(Path(os.path.realpath(target)), repository, point_id)
        with lock.shared(repository.root):
            repository.reload_index()
            refuse_damaged(repository, point_id, entries)
            directories = [entry for entry in entries if entry.kind == DIRECTORY]
            for entry in directories:
                writer.directory(entry.path)
            for entry in entries:
                if entry.kind == FILE:
                    done.bytes += writer.file(entry)
                    done.files += 1
            for entry in entries:
                if entry.kind == SYMLINK:
                    writer.symlink(entry)
                    done.symlinks += 1
            # Deepest first, so setting a parent's mtime is not undone by its children.
            for entry in sorted(directories, key=lambda e: e.path.count("/"), reverse=True):
                writer.finish_directory(entry)
                done.directories += 1
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise RestoreRefused(f"cannot write the restore: {error.strerror}{where}") from None
    return done
