"""The grpc.aio transport: one long-lived channel per agent, reused, renewed after a failure, closed at the end."""

import socket
from pathlib import Path

from agent_stub.app import AgentConfig, AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup_server.transport import GrpcAgentTransport

from conftest import policy_over


async def test_channels_are_reused_across_sessions(
    server, policy_service, start_agent, hung_address, tmp_path, source_tree
) -> None:
    """Two sessions over the same computers reuse the live agents' channels, one per address."""
    a1, a2 = await start_agent("a1"), await start_agent("a2")
    computers = [("a1", a1.address), ("a2", a2.address), ("hung", hung_address)]
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly", policy=policy_over(computers, tmp_path, source_tree)
        )
    )
    transport = server.transport
    assert isinstance(transport, GrpcAgentTransport)
    await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    channels = {address: transport._agents[address].channel for address in (a1.address, a2.address)}
    await policy_service.StopPolicy(api.StopPolicyRequest(policy_id="nightly"))
    assert {address: transport._agents[address].channel for address in channels} == channels


async def test_a_computer_that_comes_back_receives_the_next_command(
    policy_service, tmp_path: Path, source_tree
) -> None:
    """A computer down at one session gets the next session's command as soon as its agent is up again."""
    with socket.socket() as probe:  # a port nothing listens on, that the agent takes later
        probe.bind(("127.0.0.1", 0))
        closed_address = f"127.0.0.1:{probe.getsockname()[1]}"
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly",
            policy=policy_over([("late", closed_address)], tmp_path, source_tree),
        )
    )
    first = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert first.computer_results[0].delivery == pb.DELIVERY_NOT_RECEIVED
    agent = AgentServer(AgentConfig(closed_address, "late", tmp_path / "late"))
    await agent.start()
    try:
        second = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        assert second.computer_results[0].delivery == pb.DELIVERY_RECEIVED
    finally:
        await agent.stop()


async def test_close_releases_every_channel(start_agent) -> None:
    """Closing the transport closes and forgets all its channels."""
    agent = await start_agent("a1")
    transport = GrpcAgentTransport(deadline=1.0)
    await transport.call(agent.address, "ListJobs", b"", 1.0)
    assert transport.channel_count == 1
    await transport.close()
    assert transport.channel_count == 0


async def test_the_channel_bound_evicts_the_least_recently_used(start_agent) -> None:
    """With a bound of two channels, a third address evicts the one used longest ago."""
    agents = [await start_agent(f"a{i}") for i in range(3)]
    transport = GrpcAgentTransport(deadline=1.0, max_channels=2)
    try:
        for agent in agents:
            await transport.call(agent.address, "ListJobs", b"", 1.0)
        assert list(transport._agents) == [agents[1].address, agents[2].address]
    finally:
        await transport.close()


async def test_a_hung_computer_that_comes_back_receives_the_next_command(
    policy_service, tmp_path: Path, source_tree
) -> None:
    """A computer that accepted TCP and never answered gets the next session's command once its agent is up."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    address = f"127.0.0.1:{hung.getsockname()[1]}"
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly", policy=policy_over([("late", address)], tmp_path, source_tree)
        )
    )
    first = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert first.computer_results[0].detail.startswith("DEADLINE_EXCEEDED")
    hung.close()
    agent = AgentServer(AgentConfig(address, "late", tmp_path / "late"))
    await agent.start()
    try:
        second = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        assert second.computer_results[0].delivery == pb.DELIVERY_RECEIVED, second.computer_results[
            0
        ].detail
    finally:
        await agent.stop()
