"""Restarts and shutdown never finalise an outcome whose jobs still run: the next server resumes following."""

import asyncio
import contextlib
import signal
import sqlite3

import grpc
from outcome_support import create, watch_outcome
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.backends import open_storage

from conftest import policy_over, wait_for


async def stored_session(db, session_id: str) -> pb.PolicySession:
    """The session as the storage holds it, read with no server running."""
    storage = await open_storage(db)
    try:
        return await storage.get_session(session_id)
    finally:
        await storage.close()


async def test_a_server_stopped_mid_job_resumes_following_when_started_again(
    start_server, start_agent, tmp_path, source_tree, server_db  # noqa: F811 - the fixture, by name
) -> None:
    """SIGTERM's path stores the session with its outcome RUNNING; the next start follows the job to its end."""
    (source_tree / "big.bin").write_bytes(b"r" * 1_000_000)
    agent = await start_agent("a1")
    server = await start_server()
    policy = policy_over(
        [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=400_000
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        await create(service, policy)
        started = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    await server.stop()
    stored = await stored_session(server_db, started.id)
    assert stored.state == pb.SESSION_STATE_SUCCESS
    assert stored.outcome == pb.SESSION_STATE_RUNNING
    assert stored.computer_results[0].job.state == pb.JOB_STATE_RUNNING
    restarted = await start_server()
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        final = (await watch_outcome(service, started.id))[-1]
    assert final.outcome == pb.SESSION_STATE_SUCCESS
    assert final.computer_results[0].job.state == pb.JOB_STATE_SUCCEEDED
    assert final.computer_results[0].job.restore_point_id


async def test_a_server_killed_mid_delivery_fails_the_delivery_but_follows_the_job(
    spawn, start_agent, hung_address, tmp_path, source_tree
) -> None:
    """kill -9 while a hung computer holds the delivery: state FAILED (interrupted), the delivered job still followed."""
    (source_tree / "big.bin").write_bytes(b"d" * 600_000)
    agent = await start_agent("a1")
    db = str(tmp_path / "killed.db")
    args = ("backup_server", "--listen", "127.0.0.1:0", "--db", db, "--agent-deadline", "5")
    server = spawn(*args)
    policy = policy_over(
        [("a1", agent.address), ("hung", hung_address)],
        tmp_path,
        source_tree,
        throttle_bytes_per_second=400_000,
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        await create(service, policy)
        starting = asyncio.ensure_future(
            service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", session_id="s-kill"))
        )

        async def delivered() -> bool:
            try:
                now = await service.GetSession(api.GetSessionRequest(session_id="s-kill"))
            except grpc.aio.AioRpcError:
                return False
            return now.statistics.received == 1

        await wait_for(delivered, 10)

        async def stored() -> bool:
            """The received delivery's batch is in the file (read-only, beside the server)."""
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as file:
                row = file.execute(
                    "select delivery from computer_results join sessions on seq = session_seq"
                    " where id = 's-kill' and name = 'a1'"
                ).fetchone()
            return row is not None and row[0] == pb.DELIVERY_RECEIVED

        await wait_for(stored, 10)
        server.popen.send_signal(signal.SIGKILL)
        server.popen.wait()
        starting.cancel()
    restarted = spawn(*args)
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        final = (await watch_outcome(service, "s-kill"))[-1]
    assert final.state == pb.SESSION_STATE_FAILED
    assert any("interrupted" in warning for warning in final.warnings)
    by_name = {result.computer.name: result for result in final.computer_results}
    assert by_name["a1"].job.state == pb.JOB_STATE_SUCCEEDED
    assert by_name["hung"].delivery == pb.DELIVERY_PENDING
    assert final.outcome == pb.SESSION_STATE_WARNING
    assert final.statistics.jobs_succeeded == 1
