"""What a policy's source paths hold: files, directories and symlinks, found with lstat.

A source path that is itself a symlink is followed (as `find -H` does: naming it means
what it points to); nothing below it is. Paths are stored relative to `/`, so several
sources never collide and a restore recreates them under its target.

The walk never goes through a symlink, even one swapped in while the job runs: each
source's resolved path must lie inside the agent's allowed roots when it is opened, and
everything below it is listed and later opened through its parent's descriptor (see
beneath.py). A policy's `exclude_patterns` (gitignore rules, matched against the path
below `/`) leave out what they match; an excluded directory is not entered.
"""

import os
import stat
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pathspec

from backup.paths import is_within

from .beneath import Changed, Root, open_directory_path, same_file
from .control import JobControl, check
from .manifest import DIRECTORY, FILE, SYMLINK, Entry

CHECK_EVERY = 256


@dataclass(frozen=True, slots=True)
class Found:
    """An entry as it is on disk now (no chunks yet), where it is, and how to reopen it."""

    entry: Entry
    source: str
    root: int = -1  # which of the scan's opened roots it lies below
    parts: tuple[str, ...] = ()  # its names below that root
    device: int = 0
    inode: int = 0


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


@dataclass(frozen=True, slots=True)
class _Directory:
    stored: str  # its path as stored ("" for "/")
    source: str  # its path as the walk reached it
    root: int
    parts: tuple[str, ...]


class FoundList:
    """What a scan found, in order, compact: the files below a walked directory are rows
    of typed arrays beside their names (about 100 bytes a file, where a Found and its
    Entry cost a kilobyte), anything else a Found. Iterating makes each Found afresh."""

    def __init__(self) -> None:
        # Each item: a file row (>= 0), or ~k for the k-th of `others`.
        self._order = array("q")
        self._others: list[Found] = []
        self._directories: list[_Directory] = []
        self._names: list[str] = []
        self._directory = array("Q")
        self._modes = array("I")
        self._ids = array("Q")  # uid and gid, two items a row
        self._times = array("q")
        self._sizes = array("Q")
        self._inodes = array("Q")
        self._devices = array("Q")
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._order)

    def append(self, found: Found) -> None:
        self._order.append(~len(self._others))
        self._others.append(found)
        self.total_bytes += found.entry.size

    def directory(self, stored: str, source: str, root: int, parts: tuple[str, ...]) -> int:
        """Registers a walked directory; returns its number for `add_file`."""
        self._directories.append(_Directory(stored, source, root, parts))
        return len(self._directories) - 1

    def add_file(self, directory: int, name: str, info: os.stat_result) -> None:
        self._order.append(len(self._names))
        self._names.append(name)
        self._directory.append(directory)
        self._modes.append(stat.S_IMODE(info.st_mode))
        self._ids.extend((info.st_uid, info.st_gid))
        self._times.append(info.st_mtime_ns)
        self._sizes.append(info.st_size)
        self._inodes.append(info.st_ino)
        self._devices.append(info.st_dev)
        self.total_bytes += info.st_size

    def __iter__(self) -> Iterator[Found]:
        for item in self._order:
            if item < 0:
                yield self._others[~item]
                continue
            name = self._names[item]
            where = self._directories[self._directory[item]]
            inode = self._inodes[item]
            entry = Entry(
                f"{where.stored}/{name}" if where.stored else name,
                FILE,
                self._modes[item],
                self._times[item],
                self._ids[2 * item],
                self._ids[2 * item + 1],
                self._sizes[item],
                inode,
            )
            source = os.path.join(where.source, name)
            parts = (*where.parts, name)
            yield Found(entry, source, where.root, parts, self._devices[item], inode)


class Sources:
    """The roots a scan opened; files are reopened through them and checked."""

    def __init__(self) -> None:
        self.roots: list[Root] = []
        self.found = FoundList()

    def open_file(self, item: Found) -> tuple[int, os.stat_result]:
        """The found file, opened for reading, and its fstat; raises OSError (Changed if
        it was swapped)."""
        return self.roots[item.root].open_file(item.parts, item.device, item.inode)

    def close(self) -> None:
        """Closes the roots and drops what was found (read by then)."""
        for root in self.roots:
            root.close()
        self.roots.clear()
        self.found = FoundList()


class _Scan:
    def __init__(self, job: JobControl, excludes: Sequence[str]) -> None:
        self.job = job
        self.sources = Sources()
        self.seen: set[str] = set()
        # Whether two sources' stored paths nest, so one thing can be found twice: only
        # then is every stored path kept in `seen` (a tree's worth of strings).
        self.overlap = False
        self.special: list[str] = []
        self.excludes = pathspec.GitIgnoreSpec.from_lines(excludes) if excludes else None

    def add(
        self, path: str, info: os.stat_result, root: int, parts: tuple[str, ...], parent: int = -1
    ) -> bool:
        """Records one thing; returns whether it is a directory to descend into.

        `parent` is the descriptor of its directory, to read a symlink's target through.
        """
        found = self.sources.found
        if len(found) % CHECK_EVERY == 0:
            check(self.job)
        stored = stored_path(path)
        if stored in self.seen:
            return False  # overlapping source paths: the first one holds it
        if stat.S_ISREG(info.st_mode):
            kind, target = FILE, ""
        elif stat.S_ISDIR(info.st_mode):
            kind, target = DIRECTORY, ""
        elif stat.S_ISLNK(info.st_mode):
            try:
                target = os.readlink(parts[-1], dir_fd=parent) if parent >= 0 else ""
            except OSError as error:
                self.job.warn(f"skipped {path}: {error.strerror}")
                return False
            kind = SYMLINK
        else:
            self.special.append(path)
            return False
        if stored and self.excluded(stored, kind == DIRECTORY):
            return False
        if self.overlap:
            self.seen.add(stored)
        if stored:  # "/" itself is the restore target, not an entry
            entry = entry_from(path, info, kind, target)
            found.append(Found(entry, path, root, parts, info.st_dev, info.st_ino))
        return kind == DIRECTORY

    def excluded(self, stored: str, directory: bool) -> bool:
        if self.excludes is None:
            return False
        return self.excludes.match_file(f"{stored}/" if directory else stored)

    def walk(self, top: str, root: int, info: os.stat_result) -> None:
        # An explicit stack: a deep tree must not hit Python's recursion limit.
        pending: list[tuple[tuple[str, ...], str, os.stat_result]] = [((), top, info)]
        opened = self.sources.roots[root]
        while pending:
            parts, directory, seen = pending.pop()
            below = []
            try:
                with opened.directory(parts) as fd:
                    if not same_file(os.fstat(fd), seen.st_dev, seen.st_ino):
                        raise Changed(0, "it was replaced while the job ran")
                    with os.scandir(fd) as listing:
                        children = sorted(listing, key=lambda child: child.name)
                    files = _Files(self, directory, root, parts)
                    for child in children:
                        try:
                            child_info = child.stat(follow_symlinks=False)
                        except OSError as error:
                            where = os.path.join(directory, child.name)
                            self.job.warn(f"skipped {where}: {error.strerror}")
                            continue
                        if stat.S_ISREG(child_info.st_mode):
                            files.add(child.name, child_info)
                            continue
                        path = os.path.join(directory, child.name)
                        names = (*parts, child.name)
                        if self.add(path, child_info, root, names, parent=fd):
                            below.append((names, path, child_info))
            except OSError as error:
                self.job.warn(f"skipped the contents of {directory}: {error.strerror}")
                continue
            pending.extend(reversed(below))

    def source(self, path: str, allowed_roots: Sequence[str]) -> None:
        """Opens one source path (its resolved path, inside the allowed roots) and walks it."""
        try:
            info = os.stat(path)
        except OSError as error:
            self.job.warn(f"skipped {path}: {error.strerror}")
            return
        resolved = os.path.realpath(path)
        if allowed_roots and not any(is_within(resolved, root) for root in allowed_roots):
            self.job.warn(
                f"skipped {path}: it resolves to {resolved}, outside the paths this agent allows"
            )
            return
        is_directory = stat.S_ISDIR(info.st_mode)
        where = resolved if is_directory else os.path.dirname(resolved)
        try:
            fd = open_directory_path(where)
        except OSError as error:
            self.job.warn(f"skipped {path}: {error.strerror}")
            return
        root = Root(fd)
        self.sources.roots.append(root)
        index = len(self.sources.roots) - 1
        if is_directory and not same_file(os.fstat(fd), info.st_dev, info.st_ino):
            self.job.warn(f"skipped {path}: it was replaced while the job ran")
            return
        parts = () if is_directory else (os.path.basename(resolved),)
        if self.add(path, info, index, parts):
            self.walk(path, index, info)


class _Files:
    """The regular files of one walked directory, recorded as rows (the common case, kept
    short: no Found, no Entry, no path string unless excludes or overlaps need it)."""

    def __init__(self, walk: _Scan, directory: str, root: int, parts: tuple[str, ...]) -> None:
        self.walk = walk
        self.directory = directory
        self.stored = stored_path(directory)
        self.root = root
        self.parts = parts
        self.number = -1

    def add(self, name: str, info: os.stat_result) -> None:
        walk, found = self.walk, self.walk.sources.found
        if len(found) % CHECK_EVERY == 0:
            check(walk.job)
        if walk.overlap or walk.excludes is not None:
            stored = f"{self.stored}/{name}" if self.stored else name
            if stored in walk.seen or walk.excluded(stored, False):
                return
            if walk.overlap:
                walk.seen.add(stored)
        if self.number < 0:
            self.number = found.directory(self.stored, self.directory, self.root, self.parts)
        found.add_file(self.number, name, info)


def _overlapping(sources: Sequence[str]) -> bool:
    """Whether any two sources' stored paths are the same or one lies below the other."""
    stored = sorted(stored_path(source) for source in sources)
    return any(
        not inner or outer == inner or outer.startswith(f"{inner}/")
        for index, inner in enumerate(stored)
        for outer in stored[index + 1 :]
    )


def scan(
    sources: list[str],
    job: JobControl,
    allowed_roots: Sequence[str] = (),
    excludes: Sequence[str] = (),
) -> Sources:
    """Everything under the sources, parents before children; warns about what it skips.

    The caller closes the returned Sources once it has read the files.
    """
    walk = _Scan(job, excludes)
    walk.overlap = _overlapping(sources)
    try:
        for source in sources:
            walk.source(os.path.normpath(source), allowed_roots)
    except BaseException:
        walk.sources.close()
        raise
    if walk.special:
        job.warn(
            f"skipped {len(walk.special)} special files (sockets, FIFOs, devices), "
            f"such as {walk.special[0]}"
        )
    return walk.sources
