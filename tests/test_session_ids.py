"""Client-chosen session ids: a client can watch a start while its call is still fanning out."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import policy_over


@pytest.fixture
async def down_policy(
    policy_service: api_grpc.PolicyServiceStub,
    closed_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> str:
    """A policy "p" over one computer that is down: its sessions end at once."""
    policy = policy_over([("down", closed_address)], tmp_path, source_tree)
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
    return "p"


async def test_start_and_stop_take_the_session_id_given(
    policy_service: api_grpc.PolicyServiceStub, down_policy: str
) -> None:
    """The session gets the client's id and is found under it; an empty id is generated."""
    started = await policy_service.StartPolicy(
        api.StartPolicyRequest(policy_id="p", session_id="first-start")
    )
    stopped = await policy_service.StopPolicy(
        api.StopPolicyRequest(policy_id="p", session_id="first-stop")
    )
    generated = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="p"))
    assert (started.id, stopped.id) == ("first-start", "first-stop")
    assert generated.id.startswith("s-")
    found = await policy_service.GetSession(api.GetSessionRequest(session_id="first-stop"))
    assert (found.action, found.state) == (pb.SESSION_ACTION_STOP, pb.SESSION_STATE_FAILED)


async def test_a_taken_session_id_is_already_exists(
    policy_service: api_grpc.PolicyServiceStub, down_policy: str
) -> None:
    """Reusing a session id for another action or policy is ALREADY_EXISTS; the first session stays."""
    first = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s1"))
    for again in (
        policy_service.StopPolicy(api.StopPolicyRequest(policy_id="p", session_id="s1")),
        policy_service.StartPolicy(api.StartPolicyRequest(policy_id="q", session_id="s1")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await again
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "already exists, a start of policy 'p'" in str(raised.value.details())
    assert await policy_service.GetSession(api.GetSessionRequest(session_id="s1")) == first


async def test_a_retry_with_the_same_session_id_returns_that_session(
    policy_service: api_grpc.PolicyServiceStub, down_policy: str
) -> None:
    """StartPolicy and StopPolicy repeated with a session id of the same policy and action return that session and start nothing."""
    first = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s1"))
    again = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="s1"))
    assert again == first
    stopped = await policy_service.StopPolicy(api.StopPolicyRequest(policy_id="p", session_id="t1"))
    assert await policy_service.StopPolicy(
        api.StopPolicyRequest(policy_id="p", session_id="t1")
    ) == stopped
    listed = await policy_service.ListSessions(api.ListSessionsRequest(policy_id="p"))
    assert [session.id for session in listed.sessions] == ["t1", "s1"]


async def test_watch_follows_a_start_still_in_flight(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[[str], Awaitable[AgentServer]],
    slow_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """Watching the chosen id while StartPolicy runs shows the live agent before the slow one."""
    server = await start_server(agent_deadline=1.0)
    live = await start_agent("a1")
    policy = policy_over([("a1", live.address), ("slow", slow_address)], tmp_path, source_tree)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
        start = asyncio.ensure_future(
            stub.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="watched"))
        )
        snapshots: list[pb.PolicySession] = []
        # A watch begun as the session is being created may end on a RUNNING snapshot.
        while not snapshots or snapshots[-1].state == pb.SESSION_STATE_RUNNING:
            try:
                async for snapshot in stub.WatchSession(
                    api.WatchSessionRequest(session_id="watched")
                ):
                    snapshots.append(snapshot)
                    if snapshot.state != pb.SESSION_STATE_RUNNING:
                        break  # delivered; the stream goes on until the jobs' outcome
            except grpc.aio.AioRpcError as error:  # not created yet
                assert error.code() == grpc.StatusCode.NOT_FOUND
                await asyncio.sleep(0.01)
        finished = await start
    partial = [s.statistics for s in snapshots if s.state == pb.SESSION_STATE_RUNNING]
    assert any(stats.received == 1 and stats.pending == 1 for stats in partial), snapshots
    assert snapshots[-1] == finished
    assert finished.statistics.not_received == 1
