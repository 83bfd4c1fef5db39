"""Bounded handshakes: a command's deadline counts from when its channel is ready, connecting waits for one of a bounded number of places, and silent or refused computers still end within the connect bound."""

import time
from collections.abc import Sequence

import grpc

from agent_stub.fleet import Fleet
from backup.security.roles import Role
from backup.security.tls import TlsMaterial
from backup.v1 import resources_pb2 as pb
from backup_server.commands import Command
from backup_server.fanout import FanOut
from backup_server.handshakes import HOLD_SECONDS
from backup_server.sessions import LiveSession, Target, new_session
from backup_server.transport import GrpcAgentTransport

DEADLINE = 0.5
SILENT = 8


def session_over(addresses: Sequence[str]) -> LiveSession:
    targets = [
        Target(pb.Computer(name=f"c{index}", address=address), "")
        for index, address in enumerate(addresses)
    ]
    return LiveSession(new_session("s-handshakes", "nightly", pb.SESSION_ACTION_START, targets))


def server_credentials(pki) -> grpc.ChannelCredentials:
    return TlsMaterial.load(pki.tls(pki.issued("server")), Role.SERVER).channel_credentials()


async def send(
    transport: GrpcAgentTransport, addresses: Sequence[str], deadline: float = DEADLINE
) -> tuple[LiveSession, float]:
    """One session's ListJobs to every address, all at once; the session and its wall time."""
    live = session_over(addresses)
    started = time.monotonic()
    await FanOut(
        live, transport, Command("ListJobs", b"", lambda _: (None, "listed")), deadline, 1000
    ).run()
    return live, time.monotonic() - started


def agents_of(fleet: Fleet) -> list[str]:
    return [agent["address"] for agent in fleet.addresses()["agents"]]


def seconds(result: pb.ComputerResult) -> float:
    return result.latency.ToTimedelta().total_seconds()


async def test_commands_queued_behind_handshakes_longer_than_their_deadline_are_received(
    start_fleet, pki, hung_addresses, closed_address
) -> None:
    """With one handshake at a time and silent computers first, TLS agents wait longer than their deadline for a place and still receive; the silent ones and a closed port end not received, saying why, within the bound."""
    fleet = await start_fleet(count=12, tls=pki.tls(pki.agent()))
    silent = hung_addresses(SILENT)
    addresses = [*silent, *agents_of(fleet), closed_address]
    transport = GrpcAgentTransport(
        DEADLINE, credentials=server_credentials(pki), handshakes=1, connect_seconds=DEADLINE
    )
    try:
        live, wall = await send(transport, addresses)
    finally:
        await transport.close()
    results = live.session.computer_results
    by_address = {result.computer.address: result for result in results}
    for address in agents_of(fleet):
        assert by_address[address].delivery == pb.DELIVERY_RECEIVED, by_address[address].detail
    # Every silent computer kept the one place for HOLD_SECONDS before the agents got it.
    slowest = max(seconds(by_address[address]) for address in agents_of(fleet))
    assert slowest > SILENT * HOLD_SECONDS > DEADLINE
    for address in silent:
        assert by_address[address].delivery == pb.DELIVERY_NOT_RECEIVED
        assert by_address[address].detail.startswith(
            "DEADLINE_EXCEEDED: the connection could not be made within"
        )
    assert by_address[closed_address].delivery == pb.DELIVERY_NOT_RECEIVED
    assert by_address[closed_address].detail.startswith("UNAVAILABLE")
    # The bound: every place came within len(addresses) * HOLD_SECONDS, then at most the
    # connect time and a deadline; the generous margin is for a loaded machine.
    bound = len(addresses) * HOLD_SECONDS + 2 * DEADLINE
    assert wall < bound + 3.0, f"{wall:.2f} s past the bound of {bound:.2f} s"


async def test_silent_computers_beyond_the_places_end_with_the_deadline(hung_addresses) -> None:
    """Four times as many silent computers as places still end not received about one deadline after sending, since a silent handshake keeps its place only briefly."""
    silent = hung_addresses(8)
    transport = GrpcAgentTransport(1.0, handshakes=2)  # half a second to connect
    try:
        live, wall = await send(transport, silent, deadline=1.0)
    finally:
        await transport.close()
    assert live.session.statistics.not_received == len(silent)
    assert all(
        result.detail.startswith("DEADLINE_EXCEEDED: the connection could not be made")
        for result in live.session.computer_results
    )
    assert 0.9 < wall < 1.0 + 2.0
    assert transport.channel_count == 0, "a channel that never connected is dropped"


async def test_a_ready_channel_takes_no_place(start_fleet, pki, hung_addresses) -> None:
    """Once connected, a computer's next command goes straight out even while every place is held by a silent computer."""
    fleet = await start_fleet(count=3, tls=pki.tls(pki.agent()))
    transport = GrpcAgentTransport(
        DEADLINE, credentials=server_credentials(pki), handshakes=1, connect_seconds=DEADLINE
    )
    try:
        first, _ = await send(transport, agents_of(fleet))
        assert first.session.statistics.received == 3
        # Silent computers first hold the only place in turn for most of a second.
        second, _ = await send(transport, [*hung_addresses(SILENT), *agents_of(fleet)])
    finally:
        await transport.close()
    agents = [r for r in second.session.computer_results if r.computer.address in agents_of(fleet)]
    assert [r.delivery for r in agents] == [pb.DELIVERY_RECEIVED] * 3
    assert max(seconds(r) for r in agents) < SILENT * HOLD_SECONDS


async def test_a_computer_silent_last_time_takes_no_place(start_fleet, pki, hung_addresses) -> None:
    """Silent computers of one session connect without a place in the next, so a new agent behind them connects at once."""
    fleet = await start_fleet(count=1, tls=pki.tls(pki.agent()))
    silent = hung_addresses(SILENT)
    transport = GrpcAgentTransport(
        DEADLINE, credentials=server_credentials(pki), handshakes=1, connect_seconds=DEADLINE
    )
    try:
        first, _ = await send(transport, silent)
        assert first.session.statistics.not_received == SILENT
        second, _ = await send(transport, [*silent, *agents_of(fleet)])
    finally:
        await transport.close()
    *again, agent = second.session.computer_results
    assert [r.delivery for r in again] == [pb.DELIVERY_NOT_RECEIVED] * SILENT
    assert agent.delivery == pb.DELIVERY_RECEIVED, agent.detail
    assert seconds(agent) < SILENT * HOLD_SECONDS, "the agent waited behind the silent ones"
