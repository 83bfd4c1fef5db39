"""The repository lock: backups and readers share it, collection takes it alone.

Several computers may write into one repository on a share, where a kernel lock (flock)
holds only among the processes of one machine. So, as restic does, a lock is a file under
`<repository>/locks/` naming its owner (agent id, host, pid) and whether it is exclusive.
A holder refreshes its file's mtime every REFRESH_SECONDS. A lock is stale when its owner
is a process of this host that no longer runs (a kill -9 is seen at once), or when it was
not refreshed for STALE_SECONDS (a computer that died or lost the share). Stale locks are
ignored, and removed by whoever takes the lock alone.

Taking the lock is: write my file, then look at the others; if one conflicts (an
exclusive one for a shared lock, any for an exclusive one), remove mine and back off. Two
takers racing may both back off, never both win. A collection that finds the lock in use
skips its turn instead of waiting, so it never delays a backup.
"""

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import RepositoryError

log = logging.getLogger("agent_stub.engine")

LOCKS = "locks"
REFRESH_SECONDS = 60.0
STALE_SECONDS = 30 * 60.0
HOST = socket.gethostname()


@dataclass(frozen=True)
class Owner:
    agent_id: str
    host: str
    pid: int
    exclusive: bool


def create(root: Path) -> None:
    (root / LOCKS).mkdir(mode=0o700, exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _read(path: Path) -> tuple[Owner, float] | None:
    """The lock's owner and when it was last refreshed; None when it is gone or garbage."""
    try:
        refreshed = path.stat().st_mtime
        record = json.loads(path.read_text())
        owner = Owner(
            str(record["agent_id"]),
            str(record["host"]),
            int(record["pid"]),
            bool(record["exclusive"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Damaged: honoured as an exclusive lock until it is old enough to be stale.
        try:
            refreshed = path.stat().st_mtime
        except OSError:
            return None
        return Owner("", "", 0, True), refreshed
    return owner, refreshed


def stale(owner: Owner, refreshed: float, now: float | None = None) -> bool:
    if owner.host == HOST and owner.pid and not _alive(owner.pid):
        return True
    return (now or time.time()) - refreshed > STALE_SECONDS


class Held:
    """One lock file of this process, refreshed by a thread until released."""

    def __init__(self, root: Path, exclusive: bool, agent_id: str) -> None:
        self.path = root / LOCKS / f"{secrets.token_hex(8)}.json"
        self.exclusive = exclusive
        record = {"agent_id": agent_id, "host": HOST, "pid": os.getpid(), "exclusive": exclusive}
        (root / LOCKS).mkdir(mode=0o700, exist_ok=True)
        # Written aside and renamed: a taker killed mid-write leaves no half lock that
        # others would have to wait out.
        staged = self.path.with_suffix(".tmp")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record))
        os.rename(staged, self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def conflicts(self) -> list[Path]:
        """Other live locks that this one may not be held beside; removes stale ones if
        this lock is exclusive (nobody else may then be taking the repository)."""
        found = []
        now = time.time()
        for path in self.path.parent.glob("*.json"):
            if path == self.path:
                continue
            seen = _read(path)
            if seen is None:
                continue
            owner, refreshed = seen
            if stale(owner, refreshed, now):
                if self.exclusive:
                    log.info("stale repository lock removed: %s (%s)", path, owner)
                    path.unlink(missing_ok=True)
                continue
            if self.exclusive or owner.exclusive:
                found.append(path)
        return found

    def keep_fresh(self) -> None:
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                os.utime(self.path)
            except OSError as error:
                log.warning("repository lock %s not refreshed: %s", self.path, error)

    def still_held(self) -> None:
        """Raises unless this lock's file is still there: a lock removed as stale may have
        let a collection delete data this holder relies on."""
        if not self.path.exists():
            raise RepositoryError(
                f"the repository lock {self.path} was removed as stale while held; "
                "nothing was committed"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.path.unlink(missing_ok=True)


def wait_for_turn() -> None:
    time.sleep(0.05)


@contextmanager
def shared(
    root: Path, pause: Callable[[], None] | None = None, agent_id: str = ""
) -> Iterator[Held]:
    """Holds the lock shared; while someone holds it alone, calls `pause` (or sleeps).

    `pause` lets a job keep checking for a stop while it waits; it may raise.
    """
    while True:
        held = Held(root, exclusive=False, agent_id=agent_id)
        if not held.conflicts():
            break
        held.release()
        (pause or wait_for_turn)()
    held.keep_fresh()
    try:
        yield held
    finally:
        held.release()


@contextmanager
def exclusive_if_free(root: Path, agent_id: str = "") -> Iterator[bool]:
    """Holds the lock alone if nobody holds it now; yields whether it does."""
    held = Held(root, exclusive=True, agent_id=agent_id)
    try:
        if held.conflicts():
            yield False
            return
        held.keep_fresh()
        yield True
    finally:
        held.release()
