"""Job ends folded into computer statuses by two replicas at once over one real PostgreSQL:
each batch is two statements, its rows locked in one order, so batches never deadlock."""

import asyncio

from storage_conformance import a_job, a_session

from backup.v1 import resources_pb2 as pb
from backup_server.sessions import JobEnd, LiveSession
from backup_server.storage.postgres import PostgresStorage

COMPUTERS = 300


async def test_two_replicas_batches_over_the_same_computers_in_opposite_orders_all_land(
    postgres_url: str,
) -> None:
    """Two storages save batches of job ends over the same 300 computers at once, one in address order and one reversed, five rounds: no deadlock, and every computer counts each failed job once."""
    first = await PostgresStorage.open(postgres_url, pool_size=2)
    second = await PostgresStorage.open(postgres_url, pool_size=2)
    try:
        lives = []
        for name, storage in (("start", first), ("stop", second)):
            live = LiveSession(a_session(name, computers=COMPUTERS))
            await storage.insert_session(live.snapshot())
            lives.append((storage, live))
        computers = [result.computer for result in lives[0][1].session.computer_results]
        for round_ in range(5):
            for index, (_, live) in enumerate(lives):
                order = computers if index == 0 else computers[::-1]
                job_id = f"{live.session.id}-{round_}"
                start_s = 1_700_000_000 + round_
                live.job_ends.extend(
                    JobEnd("p", c, a_job(f"{job_id}-{c.address}", pb.JOB_STATE_FAILED, start_s), 1)
                    for c in order
                )
            saves = [storage.save_progress(live.take_progress()) for storage, live in lives]
            if round_ == 0:  # the status rows are created first (see apply_job_ends)
                for save in saves:
                    await save
            else:
                await asyncio.wait_for(asyncio.gather(*saves), 30)
        statuses = await first.list_computer_statuses("p", ("", ""), COMPUTERS + 1)
        assert len(statuses) == COMPUTERS
        assert {status.consecutive_failures for status in statuses} == {10}
        assert all(status.last_job.id.split("-")[1] == "4" for status in statuses)
    finally:
        await first.close()
        await second.close()
