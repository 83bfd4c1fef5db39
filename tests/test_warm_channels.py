"""Warm channels: a starting server connects to its stored policies' computers in the background."""

import asyncio
import time
from pathlib import Path

import grpc

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.share_owners import owner_of
from backup_server.transport import WARM_HANDSHAKES, GrpcAgentTransport

from conftest import policy_over, wait_for


async def test_a_restarted_server_connects_to_its_computers_before_the_first_session(
    start_server, start_agent, closed_address: str, hung_address: str, tmp_path: Path, source_tree: Path
) -> None:
    """After a restart the live computers' channels are ready without a session; refused and hung ones are dropped, and the first session reaches every live one."""
    agents = [await start_agent(f"a{i}") for i in range(3)]
    computers = [(a.config.name, a.address) for a in agents]
    computers += [("down", closed_address), ("hung", hung_address)]
    first = await start_server(agent_deadline=0.5)
    async with grpc.aio.insecure_channel(first.address) as channel:
        policy = policy_over(computers, tmp_path, source_tree)
        await api_grpc.PolicyServiceStub(channel).CreatePolicy(
            api.CreatePolicyRequest(policy_id="p", policy=policy)
        )
    await first.stop()
    again = await start_server(agent_deadline=0.5)
    transport = again.transport
    assert isinstance(transport, GrpcAgentTransport)

    async def warmed() -> bool:
        return transport.channel_count == 3

    await wait_for(warmed, seconds=10)
    await asyncio.sleep(0.6)  # past the connect timeout: the refused and hung stay dropped
    assert transport.channel_count == 3
    async with grpc.aio.insecure_channel(again.address) as channel:
        session = await api_grpc.PolicyServiceStub(channel).StartPolicy(
            api.StartPolicyRequest(policy_id="p")
        )
    delivered = {r.computer.name: r.delivery for r in session.computer_results}
    assert [delivered[f"a{i}"] for i in range(3)] == [pb.DELIVERY_RECEIVED] * 3
    assert delivered["down"] == delivered["hung"] == pb.DELIVERY_NOT_RECEIVED


async def test_warming_connects_a_bounded_number_at_once(hung_addresses) -> None:
    """Warming more silent computers than WARM_HANDSHAKES takes two waves of the connect time, gives up on each, and keeps none."""
    transport = GrpcAgentTransport(deadline=0.3)
    started = time.monotonic()
    try:
        addresses = hung_addresses(WARM_HANDSHAKES + 10)
        ready = await asyncio.wait_for(transport.warm(addresses, 0.3), timeout=10)
        assert ready == 0 and transport.channel_count == 0
        assert time.monotonic() - started >= 0.55  # the last ten waited for a slot
    finally:
        await transport.close()


async def test_a_session_sent_while_warming_reaches_every_live_tls_computer(
    start_server,
    start_agent,
    pki,
    closed_address: str,
    hung_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """A StartPolicy sent right after a TLS server restarts, its channels still connecting, reaches every live agent; the refused and hung computers are not received."""
    agents = [await start_agent(f"a{i}", tls=pki.tls(pki.agent())) for i in range(4)]
    computers = [(a.config.name, a.address) for a in agents]
    computers += [("down", closed_address), ("hung", hung_address)]
    tls = pki.tls(pki.issued("server"))
    first = await start_server(agent_deadline=0.5, tls=tls)
    operator = pki.client(pki.issued("operator"))
    async with operator.channel(first.address) as channel:
        policy = policy_over(computers, tmp_path, source_tree)
        await api_grpc.PolicyServiceStub(channel).CreatePolicy(
            api.CreatePolicyRequest(policy_id="p", policy=policy)
        )
    await first.stop()
    again = await start_server(agent_deadline=0.5, tls=tls)
    started = time.monotonic()
    async with operator.channel(again.address) as channel:
        session = await api_grpc.PolicyServiceStub(channel).StartPolicy(
            api.StartPolicyRequest(policy_id="p")
        )
    delivered = {r.computer.name: r.delivery for r in session.computer_results}
    assert [delivered[f"a{i}"] for i in range(4)] == [pb.DELIVERY_RECEIVED] * 4
    assert delivered["down"] == delivered["hung"] == pb.DELIVERY_NOT_RECEIVED
    assert time.monotonic() - started < 0.5 + 3.0, "the hung computer costs about a deadline"


async def test_each_replica_warms_only_the_computers_it_owns(
    start_server, start_agent, postgres_url: str, closed_address: str, hung_address: str,
    tmp_path: Path, source_tree: Path,
) -> None:
    """A replica starting beside another warms the live computers whose owner (rendezvous
    hash over the live members) it is, not the other's; refused and hung ones are dropped."""
    agents = [await start_agent(f"a{i}") for i in range(16)]
    computers = [(a.config.name, a.address) for a in agents]
    computers += [("down", closed_address), ("hung", hung_address)]
    first = await start_server(db=postgres_url, agent_deadline=0.5)
    async with grpc.aio.insecure_channel(first.address) as channel:
        await api_grpc.PolicyServiceStub(channel).CreatePolicy(
            api.CreatePolicyRequest(policy_id="p", policy=policy_over(computers, tmp_path, source_tree))
        )
    second = await start_server(db=postgres_url, agent_deadline=0.5)
    assert second.replicas is not None and first.replicas is not None
    members = await second.storage.share_members(second.replicas.id)
    assert sorted(members) == sorted([first.replicas.id, second.replicas.id])
    owned = [a for a in agents if owner_of(a.address, members) == second.replicas.id]
    assert 0 < len(owned) < len(agents)
    transport = second.transport
    assert isinstance(transport, GrpcAgentTransport)
    warming = second._warming
    assert warming is not None
    assert await asyncio.wait_for(asyncio.shield(warming), 10) == len(owned)
    assert transport.channel_count == len(owned)
