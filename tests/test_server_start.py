"""Starting the backup server: no database file left by a server that cannot listen; interrupted sessions end when they were interrupted."""

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import policy_over, wait_for


def test_a_server_that_cannot_bind_creates_no_database(tmp_path: Path) -> None:
    """`backup-server` without --db on a taken port exits with one line and no ./backup-server.db."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "-m", "backup_server", "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert finished.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert list(tmp_path.iterdir()) == []


async def test_an_interrupted_session_ends_at_its_last_activity(
    spawn, start_server, hung_address, tmp_path, source_tree
) -> None:
    """A session a kill -9 interrupted ends, once recovered, before the kill, not when the server came back."""
    database = tmp_path / "server.db"
    process = spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", str(database), "--agent-deadline", "30"
    )
    async with grpc.aio.insecure_channel(process.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over([("hung", hung_address)], tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        starting = asyncio.ensure_future(
            service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        )

        async def running() -> bool:
            return bool((await service.ListSessions(api.ListSessionsRequest())).sessions)

        await wait_for(running)
        killed_ns = time.time_ns()
        process.popen.send_signal(signal.SIGKILL)
        process.popen.wait()
        starting.cancel()
    await asyncio.sleep(1.0)
    server = await start_server(db=database)
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        [session] = (await service.ListSessions(api.ListSessionsRequest())).sessions
    assert session.state == pb.SESSION_STATE_FAILED
    start_ns, end_ns = session.start_time.ToNanoseconds(), session.end_time.ToNanoseconds()
    assert start_ns <= end_ns <= killed_ns
