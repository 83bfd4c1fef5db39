"""WatchJob streams open their connections inside the handshake places, as commands do:
a cold channel connects through `Handshakes` first, a ready one takes no place, and a
silent or closed computer ends the stream UNAVAILABLE within the deadline instead of
hanging; real TLS agents of the fleet simulator, a silent listener and a closed port."""

import asyncio
import time

import grpc
import pytest
from test_bounded_handshakes import agents_of, server_credentials

from backup.v1 import agent_control_pb2 as agent_pb
from backup_server.fanout import AgentCallError
from backup_server.handshakes import Handshakes
from backup_server.transport import GrpcAgentTransport

DEADLINE = 1.0


async def watch(transport: GrpcAgentTransport, address: str) -> AgentCallError:
    """A WatchJob stream for a job the agent does not have; the error it ends with."""
    request = agent_pb.WatchJobRequest(job_id="no-such-job").SerializeToString()
    with pytest.raises(AgentCallError) as ended:
        async for _ in transport.stream(address, "WatchJob", request):
            pass
    return ended.value


async def test_streams_connect_inside_the_handshake_places(start_fleet, pki, monkeypatch) -> None:
    """Streams to cold TLS agents each take a handshake place (one place for all of them), and a second stream over the ready channel takes none."""
    connecting: list[str] = []
    real_connect = Handshakes.connect

    async def counted(self: Handshakes, address: str, channel: grpc.aio.Channel, deadline: float):  # type: ignore[no-untyped-def]
        connecting.append(address)
        await real_connect(self, address, channel, deadline)

    monkeypatch.setattr(Handshakes, "connect", counted)
    fleet = await start_fleet(count=6, tls=pki.tls(pki.agent()))
    transport = GrpcAgentTransport(DEADLINE, credentials=server_credentials(pki), handshakes=1)
    try:
        addresses = agents_of(fleet)
        first = await asyncio.gather(*(watch(transport, address) for address in addresses))
        assert sorted(connecting) == sorted(addresses)
        again = await asyncio.gather(*(watch(transport, address) for address in addresses))
    finally:
        await transport.close()
    # The agent answered each stream itself: the job is unknown to it.
    assert {error.code for error in [*first, *again]} == {"NOT_FOUND"}
    assert len(connecting) == len(addresses), "a ready channel takes no place"


async def test_a_stream_to_a_silent_or_closed_computer_ends_unavailable(
    hung_address: str, closed_address: str
) -> None:
    """A stream to a computer that accepts TCP and never answers, or to a closed port, ends UNAVAILABLE within about the deadline, so following asks again later."""
    transport = GrpcAgentTransport(DEADLINE)
    try:
        started = time.monotonic()
        silent, closed = await asyncio.gather(
            watch(transport, hung_address), watch(transport, closed_address)
        )
        took = time.monotonic() - started
    finally:
        await transport.close()
    assert (silent.code, closed.code) == ("UNAVAILABLE", "UNAVAILABLE")
    assert "could not be made" in silent.message
    assert took < DEADLINE + 2.0, took
