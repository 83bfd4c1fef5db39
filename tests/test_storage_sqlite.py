"""The SQLite backend passes the storage conformance suite (on a file, and on a small full disk)."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from disk_support import SmallDisk, small_disk
from storage_conformance import *  # noqa: F403 - the suite's tests run against this backend
from storage_conformance import Fillable, Reopen

from backup_server.storage.sqlite import SqliteStorage


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[list[SqliteStorage]]:
    """The storages opened over one file, newest last; the newest is closed at the end."""
    stack = [await SqliteStorage.open(tmp_path / "server.db")]
    yield stack
    await stack[-1].close()


@pytest.fixture
def storage(opened: list[SqliteStorage]) -> SqliteStorage:
    return opened[0]


@pytest.fixture
def reopen(opened: list[SqliteStorage], tmp_path: Path) -> Reopen:
    async def again() -> SqliteStorage:
        await opened[-1].close()
        opened.append(await SqliteStorage.open(tmp_path / "server.db"))
        return opened[-1]

    return again


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
async def fillable(disk: SmallDisk) -> AsyncIterator[Fillable]:
    storage = await SqliteStorage.open(disk.path / "server.db")
    yield Fillable(storage, disk.fill, disk.free)
    disk.free()
    await storage.close()
