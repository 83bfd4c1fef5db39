"""What a policy's source paths hold: files, directories and symlinks, found with lstat.

A source path that is itself a symlink is followed (as `find -H` does: naming it means
what it points to); nothing below it is. Paths are stored relative to `/`, so several
sources never collide and a restore recreates them under its target.
"""

import os
import stat
from dataclasses import dataclass

from .control import JobControl, check
from .manifest import DIRECTORY, FILE, SYMLINK, Entry

CHECK_EVERY = 256


@dataclass(frozen=True)
class Found:
    """An entry as it is on disk now (no chunks yet) and where it is."""

    entry: Entry
    source: str


def stored_path(path: str) -> str:
    return os.path.normpath(path).lstrip("/")


def entry_from(path: str, info: os.stat_result, kind: str, target: str = "") -> Entry:
    return Entry(
        path=stored_path(path),
        kind=kind,
        mode=stat.S_IMODE(info.st_mode),
        mtime_ns=info.st_mtime_ns,
        uid=info.st_uid,
        gid=info.st_gid,
        size=info.st_size if kind == FILE else 0,
        inode=info.st_ino if kind == FILE else 0,
        target=target,
    )


class _Scan:
    def __init__(self, job: JobControl) -> None:
        self.job = job
        self.found: list[Found] = []
        self.seen: set[str] = set()
        self.special: list[str] = []

    def add(self, path: str, info: os.stat_result, read_from: str = "") -> bool:
        """Records one thing; returns whether it is a directory to descend into.

        `read_from` is where its data is read when that differs from `path` (a source
        path that is a symlink to a file: the file is opened without following links).
        """
        if len(self.found) % CHECK_EVERY == 0:
            check(self.job)
        if stored_path(path) in self.seen:
            return False  # overlapping source paths: the first one holds it
        if stat.S_ISREG(info.st_mode):
            kind, target = FILE, ""
        elif stat.S_ISDIR(info.st_mode):
            kind, target = DIRECTORY, ""
        elif stat.S_ISLNK(info.st_mode):
            try:
                kind, target = SYMLINK, os.readlink(path)
            except OSError as error:
                self.job.warn(f"skipped {path}: {error.strerror}")
                return False
        else:
            self.special.append(path)
            return False
        self.seen.add(stored_path(path))
        if stored_path(path):  # "/" itself is the restore target, not an entry
            self.found.append(Found(entry_from(path, info, kind, target), read_from or path))
        return kind == DIRECTORY

    def walk(self, top: str) -> None:
        # An explicit stack: a deep tree must not hit Python's recursion limit.
        pending = [top]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    children = sorted(listing, key=lambda child: child.name)
            except OSError as error:
                self.job.warn(f"skipped the contents of {directory}: {error.strerror}")
                continue
            below = []
            for child in children:
                try:
                    info = child.stat(follow_symlinks=False)
                except OSError as error:
                    self.job.warn(f"skipped {child.path}: {error.strerror}")
                    continue
                if self.add(child.path, info):
                    below.append(child.path)
            pending.extend(reversed(below))


def scan(sources: list[str], job: JobControl) -> list[Found]:
    """Everything under the sources, parents before children; warns about what it skips."""
    walk = _Scan(job)
    for source in sources:
        path = os.path.normpath(source)
        try:
            info = os.stat(path)
        except OSError as error:
            job.warn(f"skipped {path}: {error.strerror}")
            continue
        if walk.add(path, info, read_from=os.path.realpath(path)):
            walk.walk(path)
    if walk.special:
        job.warn(
            f"skipped {len(walk.special)} special files (sockets, FIFOs, devices), "
            f"such as {walk.special[0]}"
        )
    return walk.found
