"""A real local SMTP server (aiosmtpd) and HTTP receiver that notifications are sent to.

Used as a pytest plugin (tests/conftest.py lists it): fixtures `mailbox`, `receiver` and
`closed_addresses`.
"""

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope


@dataclass
class Mailbox:
    """What the local SMTP server accepted."""

    address: str
    mails: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Envelope) -> str:
        self.mails.append(message_from_bytes(bytes(envelope.content or b"")))
        return "250 OK"

    def url(self) -> str:
        return f"mailto://{self.address}?from=backup@example.com&to=ops@example.com"


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on loopback port 0, in the test's event loop."""
    box = Mailbox("")
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="mail.test"), "127.0.0.1", 0
    )
    box.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield box
    server.close()
    await server.wait_closed()


@dataclass
class Receiver:
    """What the local HTTP receiver was sent: each JSON body and its Authorization header."""

    port: int
    posts: list[tuple[dict[str, Any], str]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback port 0 that records each JSON POST."""
    posts: list[tuple[dict[str, Any], str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((json.loads(body), self.headers.get("Authorization", "")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Receiver(http.server_address[1], posts)
    http.shutdown()
    http.server_close()


@pytest.fixture
def closed_addresses() -> Iterator[Callable[[int], list[str]]]:
    """Distinct addresses whose ports are bound but never listen: connecting is refused."""
    sockets: list[socket.socket] = []

    def make(count: int) -> list[str]:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [f"127.0.0.1:{probe.getsockname()[1]}" for probe in sockets[-count:]]

    yield make
    for probe in sockets:
        probe.close()


def mail_text(mail: Message) -> str:
    """The text/plain body of a mail."""
    body = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    return str(body.get_payload(decode=True).decode())  # type: ignore[union-attr]
