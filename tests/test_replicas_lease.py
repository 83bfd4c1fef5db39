"""A replica's lease over one real PostgreSQL is renewed on a connection of its own, in a loop of
its own: a pool taken by slow statements and a sweep waiting for it do not let it lapse."""

import asyncio
import time

from backup_server.replicas import Replicas
from backup_server.storage.postgres import PostgresStorage

LEASE = 0.9
BUSY_SECONDS = 4.0


async def test_the_lease_is_renewed_while_every_pooled_connection_is_busy(postgres_url: str) -> None:
    """Both pooled connections sleep for 4 s (and the sweep waits for one) while the replica's 0.9 s lease is watched from another storage: it stays live throughout, renewed every third of a lease."""
    storage = await PostgresStorage.open(postgres_url, pool_size=2)
    observer = await PostgresStorage.open(postgres_url, pool_size=1)
    replicas = Replicas(storage, "127.0.0.1:1", lease=LEASE)

    async def adopt(session_id: str) -> None:
        raise AssertionError(f"nothing to take over, yet {session_id} was")

    async def slow() -> None:
        async with storage.pool.connection() as conn:
            await conn.execute("select pg_sleep(%s)", [BUSY_SECONDS])

    try:
        await replicas.start(adopt)
        busy = [asyncio.create_task(slow()) for _ in range(2)]
        await asyncio.sleep(0.2)  # both connections taken: any pooled call waits now
        assert storage.pool.get_stats()["pool_available"] == 0
        expiries, ended = [], time.monotonic() + BUSY_SECONDS - 0.5
        while time.monotonic() < ended:
            assert replicas.id in await observer.live_replicas()
            async with observer.pool.connection() as conn:
                cursor = await conn.execute(
                    "select expires_ns from replicas where id = %s", [replicas.id]
                )
                [(expires_ns,)] = await cursor.fetchall()
            expiries.append(expires_ns)
            await asyncio.sleep(0.1)
        assert not any(task.done() for task in busy)  # the pool was busy all along
        assert len(set(expiries)) >= 3  # renewed again and again meanwhile
        await asyncio.gather(*busy)
    finally:
        await replicas.stop()
        await storage.close()
        await observer.close()
