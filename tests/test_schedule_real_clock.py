"""On the real clock: a policy scheduled every minute starts within the minute and its window's end stops it."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, policy_over, wait_for


@pytest.mark.slow
@pytest.mark.timeout(200)
async def test_every_minute_starts_within_the_minute_and_the_window_end_stops_it(start_server, start_agent, agent_control, tmp_path: Path, source_tree: Path) -> None:
    """cron '* * * * *' with a window ending a minute after the first run: a SCHEDULE session within 60 s, a WINDOW stop at the end, the job STOPPED."""
    agent = await start_agent("a1")
    (source_tree / "big.bin").write_bytes(b"q" * 4_000_000)
    server = await start_server()
    now = datetime.now(UTC)
    first_run = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    window = pb.BackupWindow(start=f"{now:%H:%M}", end=f"{first_run + timedelta(minutes=1):%H:%M}")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over([("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=20_000,
                               schedule=pb.Schedule(cron="* * * * *"), backup_window=window),
        ))  # fmt: skip
        sessions: list[pb.PolicySession] = []

        async def listed(count: int) -> bool:
            reply = await stub.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
            sessions[:] = reversed(reply.sessions)
            return len(sessions) >= count

        await wait_for(lambda: listed(1), 75)
        started = sessions[0]
        assert started.trigger == pb.SESSION_TRIGGER_SCHEDULE
        assert abs(started.start_time.ToDatetime(tzinfo=UTC) - first_run) < timedelta(seconds=5)
        await wait_for(lambda: listed(2), 75)
        stop = sessions[1]
        assert (stop.action, stop.trigger) == (pb.SESSION_ACTION_STOP, pb.SESSION_TRIGGER_WINDOW)
        assert stop.start_time.ToDatetime(tzinfo=UTC) - (first_run + timedelta(minutes=1)) < timedelta(seconds=5)
        full = await stub.GetSession(api.GetSessionRequest(session_id=started.id))
    ended = await job_ends(agent_control(agent.address), full.computer_results[0].job_id)
    assert ended.state == pb.JOB_STATE_STOPPED
