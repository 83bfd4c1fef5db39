"""The PostgreSQL backend passes the storage conformance suite, on a real server the tests start
(and, for the full-disk test, with its tables on a small tmpfs)."""

from collections.abc import AsyncIterator

import pytest
from postgres_support import PostgresServer, database_on_a_small_disk
from storage_conformance import *  # noqa: F403 - the suite's tests run against this backend
from storage_conformance import Fillable, Reopen

from backup_server.storage.postgres import PostgresStorage


@pytest.fixture
async def opened(postgres_url: str) -> AsyncIterator[list[PostgresStorage]]:
    """The storages opened over one database, newest last; the newest is closed at the end."""
    stack = [await PostgresStorage.open(postgres_url, pool_size=4)]
    yield stack
    await stack[-1].close()


@pytest.fixture
def storage(opened: list[PostgresStorage]) -> PostgresStorage:
    return opened[0]


@pytest.fixture
def reopen(opened: list[PostgresStorage], postgres_url: str) -> Reopen:
    async def again() -> PostgresStorage:
        await opened[-1].close()
        opened.append(await PostgresStorage.open(postgres_url, pool_size=4))
        return opened[-1]

    return again


@pytest.fixture
async def fillable(postgres: PostgresServer) -> AsyncIterator[Fillable]:
    with database_on_a_small_disk(postgres) as (url, disk):
        storage = await PostgresStorage.open(url, pool_size=2)
        try:
            yield Fillable(storage, disk.fill, disk.free)
        finally:
            disk.free()
            await storage.close()
