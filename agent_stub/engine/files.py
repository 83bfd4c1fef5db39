"""Durable file writes: the whole file or nothing, and directories whose renames survive.

The engine's commit rule (data first, then the manifest by one rename) rests on these two;
the agent's own state under its data dir uses the same helper.
"""

import ctypes
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIRECTORY = 0o700


def private_directory(path: Path) -> None:
    """Creates `path` and its missing parents 0700 (chmod: the umask may take bits or add
    none); a directory that exists is left as it is, for its owner to judge."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to chmod
        os.chmod(directory, PRIVATE_DIRECTORY)


def write_atomically(path: Path, content: str | bytes, staging: Path | None = None) -> None:
    """The whole file or nothing: written aside (in `staging`, else beside it), fsynced,
    then renamed over `path`. Missing parents are made 0700."""
    folder = staging or path.parent
    if staging is None:
        private_directory(folder)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content.encode() if isinstance(content, str) else content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def create_once(path: Path, content: bytes, staging: Path) -> bool:
    """Writes `path` only if it does not exist yet, atomically; returns whether this call
    created it. A hard link fails if the name exists, so two creators never both win."""
    fd, temporary = tempfile.mkstemp(dir=staging, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        sync_directory(path.parent)
        return True
    finally:
        os.unlink(temporary)


def sync_directory(path: Path) -> None:
    """Makes the renames and creations in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    return function


_SYNCFS = _libc_syncfs()


def write_unsynced(path: Path, content: bytes) -> None:
    """Writes a new file without waiting for the disk: `make_durable` does, for many."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def make_durable(directory: Path, files: list[Path]) -> int:
    """Makes these files (all on the filesystem of `directory`) durable; returns the
    number of flush calls: one syncfs for all of them where the kernel has it, else one
    fsync per file."""
    if _SYNCFS is not None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _SYNCFS(fd) != 0:
                number = ctypes.get_errno()
                raise OSError(number, os.strerror(number))
        finally:
            os.close(fd)
        return 1
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(files)
