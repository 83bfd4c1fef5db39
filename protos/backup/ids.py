"""How ids are minted: sessions, jobs and restore points sort by when they began.

Each is a prefix, the UTC time to the second, then random hex, so that a directory
listing or a log reads in order and two ids made in the same second still differ.
Resource ids (policies, protection groups) are a prefix and random hex: they name a
thing, not a moment. A client may always choose its own id instead (AIP-133).
"""

import secrets
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def _timed(prefix: str) -> str:
    return time.strftime(f"{prefix}-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(4)


def new_session_id() -> str:
    """A fresh session id (`s-YYYYmmdd-HHMMSS-xxxxxxxx`)."""
    return _timed("s")


def new_job_id() -> str:
    """A fresh job id (`j-YYYYmmdd-HHMMSS-xxxxxxxx`)."""
    return _timed("j")


def new_point_id() -> str:
    """A fresh restore point id (`rp-YYYYmmdd-HHMMSS-xxxxxxxx`)."""
    return _timed("rp")


def new_resource_id(prefix: str) -> str:
    """A fresh id for a policy or protection group (`policy-xxxxxxxxxxxx`)."""
    return f"{prefix}-{secrets.token_hex(6)}"


def newest_first(items: Iterable[T], moment: Callable[[T], tuple[int, str]]) -> list[T]:
    """`items` newest first by `moment` (nanoseconds, id); equal instants by id, descending,
    so two listings of the same things always come in the same order."""
    return sorted(items, key=moment, reverse=True)
