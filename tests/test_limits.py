"""The open-file limit a fan-out needs: raised at start-up, and a clear refusal past it."""

import resource
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from backup import limits
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup_server.app import BackupServer, ServerConfig
from backup_server.transport import GrpcAgentTransport

from conftest import policy_over


@pytest.fixture
def open_file_limit() -> Iterator[None]:
    """Puts the soft open-file limit back as it was after the test."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def test_server_raises_its_open_file_limit_at_start(start_server, open_file_limit) -> None:
    """A server started under a low soft limit raises it to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    await start_server()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard


async def test_policy_needing_more_files_than_allowed_fails_clearly(
    policy_service, open_file_limit, hung_addresses, tmp_path: Path, source_tree: Path
) -> None:
    """More new connections than the open-file limit leaves: FAILED_PRECONDITION, no session."""
    computers = [(f"c{index}", address) for index, address in enumerate(hung_addresses(40))]
    policy = policy_over(computers, tmp_path, source_tree)
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="big", policy=policy))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    room_for_ten = limits.open_descriptors() + limits.RESERVED_DESCRIPTORS + 10
    resource.setrlimit(resource.RLIMIT_NOFILE, (room_for_ten, hard))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="big"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = refused.value.details() or ""
    assert "40 new agent connections" in message and "open-file limit" in message
    listed = await policy_service.ListSessions(api.ListSessionsRequest(policy_id="big"))
    assert not listed.sessions


async def test_policy_over_more_computers_than_channels_kept_fails_clearly(
    tmp_path: Path, closed_address: str, hung_addresses, source_tree: Path
) -> None:
    """A policy reaching more computers than the channel cap is refused, not thrashed."""
    config = ServerConfig(listen="127.0.0.1:0", db=tmp_path / "server.db", agent_deadline=1.0)
    server = BackupServer(config, GrpcAgentTransport(max_channels=3))
    await server.start()
    try:
        computers = [(f"c{index}", address) for index, address in enumerate(hung_addresses(4))]
        policy = policy_over(computers, tmp_path, source_tree)
        async with grpc.aio.insecure_channel(server.address) as channel:
            service = api_grpc.PolicyServiceStub(channel)
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id="wide", policy=policy))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await service.StartPolicy(api.StartPolicyRequest(policy_id="wide"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "at most 3 agent connections" in (refused.value.details() or "")
    finally:
        await server.stop()
