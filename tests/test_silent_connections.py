"""Silent connections: a TCP connection that never completes its HTTP/2 preface is dropped in plaintext too, and connections at once are capped."""

import asyncio
import socket
import time

import grpc

from backup import serving

PREFACE_ONLY = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the preface without the SETTINGS frame


async def closed_after(address: str, payload: bytes, seconds: float) -> float | None:
    """Connects, sends `payload`, and returns when the peer closed (None if it did not)."""
    host, _, port = address.rpartition(":")
    connection = socket.create_connection((host, int(port)))
    connection.setblocking(False)
    try:
        connection.sendall(payload)
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            try:
                if connection.recv(4096) == b"":
                    return time.monotonic() - began
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return time.monotonic() - began
            await asyncio.sleep(0.05)
        return None
    finally:
        connection.close()


async def test_an_agent_drops_silent_plaintext_connections(start_agent) -> None:
    """A plaintext agent closes a connection that sends nothing, or only the preface, once its handshake timeout passes."""
    agent = await start_agent("web-1", handshake_timeout=0.5)
    for payload in (b"", PREFACE_ONLY):
        waited = await closed_after(agent.address, payload, seconds=10)
        assert waited is not None and waited < 5


async def test_the_server_drops_silent_plaintext_connections(start_server) -> None:
    """A plaintext backup server closes a connection that never sends a byte once its handshake timeout passes."""
    server = await start_server(handshake_timeout=0.5)
    waited = await closed_after(server.address, b"", seconds=10)
    assert waited is not None and waited < 5


def test_the_default_handshake_timeout_is_short() -> None:
    """Every server's options bound the handshake to seconds (grpc's own default is two minutes), and the real processes' options cap connections."""
    assert dict(serving.SERVER_OPTIONS)["grpc.server_handshake_timeout_ms"] <= 10_000
    capped = dict(serving.server_options(max_connections=serving.MAX_CONNECTIONS))
    assert capped["grpc.max_allowed_incoming_connections"] == serving.MAX_CONNECTIONS


async def test_connections_past_the_cap_are_closed() -> None:
    """With the options every server uses and a cap of two, a third silent connection is closed at once while the first two wait for their timeout."""
    server = grpc.aio.server(options=serving.server_options(30.0, max_connections=2))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        address = f"127.0.0.1:{port}"
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        await asyncio.sleep(0.3)
        waited = await closed_after(address, b"", seconds=3)
        assert waited is not None and waited < 2
        for connection in held:
            connection.close()
    finally:
        await server.stop(0)


async def test_a_slow_loris_preface_is_cut_off(start_agent) -> None:
    """A client trickling its HTTP/2 preface one byte at a time is closed once the handshake timeout passes, however long it keeps trickling."""
    agent = await start_agent("web-1", handshake_timeout=0.5)
    host, _, port = agent.address.rpartition(":")
    connection = socket.create_connection((host, int(port)))
    began = time.monotonic()
    try:
        for byte in PREFACE_ONLY * 10:
            try:
                connection.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the connection outlived ten trickled prefaces")
    finally:
        connection.close()
    assert time.monotonic() - began < 5
