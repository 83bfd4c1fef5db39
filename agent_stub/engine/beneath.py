"""Opening what lies beneath a source root without ever following a symlink.

The agent runs as root and reads what a policy names, inside directories that other
users may write to. Checking a path's name once and opening it later by that name lets
anyone who can write inside an allowed root swap a directory for a symlink to /etc while
the job runs. So a root is opened once, by its resolved path, one component at a time
with O_NOFOLLOW; everything below it is opened relative to its parent's descriptor, again
with O_NOFOLLOW on every component (openat, as `openat2(RESOLVE_NO_SYMLINKS)` would, which
Python does not offer); and a file is used only if its device and inode are the ones the
scan found. A symlink where a directory was fails with ELOOP or ENOTDIR: the file is
skipped with a warning, never read through the link.
"""

import contextlib
import errno
import os
from collections.abc import Iterator

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file must not block the job in open().
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
NOATIME = getattr(os, "O_NOATIME", 0)
# Open directories kept per root (the path to the current one); deeper ones are opened
# for each use and closed, so a very deep tree costs time, never the process's files.
CACHED_DEPTH = 32
SWAPPED = (errno.ELOOP, errno.ENOTDIR)


class Changed(OSError):
    """What is there now is not what the scan found: skipped, with a warning."""


def open_directory_path(path: str) -> int:
    """The directory at the absolute, resolved `path`, no component a symlink."""
    fd = os.open("/", DIRECTORY_FLAGS)
    try:
        for name in [part for part in path.split("/") if part]:
            child = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as error:
        os.close(fd)
        raise _explained(error) from None
    return fd


def same_file(info: os.stat_result, device: int, inode: int) -> bool:
    return (info.st_dev, info.st_ino) == (device, inode)


class Root:
    """One opened root and the directories below it that are open at the moment."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._open: list[tuple[str, int]] = []  # (name, fd) from the root down

    def _deepest(self) -> int:
        return self._open[-1][1] if self._open else self.fd

    @contextlib.contextmanager
    def directory(self, parts: tuple[str, ...]) -> Iterator[int]:
        """A descriptor of the directory `parts` below the root, valid inside the block."""
        cached = parts[:CACHED_DEPTH]
        keep = 0
        while keep < min(len(self._open), len(cached)) and self._open[keep][0] == cached[keep]:
            keep += 1
        for _, fd in reversed(self._open[keep:]):
            os.close(fd)
        del self._open[keep:]
        try:
            for name in cached[keep:]:
                self._open.append((name, os.open(name, DIRECTORY_FLAGS, dir_fd=self._deepest())))
        except OSError as error:
            raise _explained(error) from None
        fd, owned = self._deepest(), -1
        try:
            for name in parts[CACHED_DEPTH:]:
                try:
                    child = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
                except OSError as error:
                    raise _explained(error) from None
                if owned >= 0:
                    os.close(owned)
                fd = owned = child
            yield fd
        finally:
            if owned >= 0:
                os.close(owned)

    def open_file(
        self, parts: tuple[str, ...], device: int, inode: int
    ) -> tuple[int, os.stat_result]:
        """The file `parts` below the root, opened for reading if it is still the one
        found, with what fstat says of it."""
        with self.directory(parts[:-1]) as parent:
            try:
                try:
                    fd = os.open(parts[-1], FILE_FLAGS | NOATIME, dir_fd=parent)
                except PermissionError:
                    # O_NOATIME is only for the file's owner; anyone else reads without it.
                    fd = os.open(parts[-1], FILE_FLAGS, dir_fd=parent)
            except OSError as error:
                raise _explained(error) from None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not same_file(info, device, inode):
            os.close(fd)
            raise Changed(0, "it was replaced while the job ran (not the file the scan found)")
        return fd, info

    def close(self) -> None:
        for _, fd in reversed(self._open):
            os.close(fd)
        self._open.clear()
        os.close(self.fd)


def _explained(error: OSError) -> OSError:
    if error.errno in SWAPPED:
        return Changed(
            error.errno,
            "its path changed while the job ran (a symlink or file where the scan found a "
            "directory or file)",
        )
    return error
