"""The ritual of every backupctl command, written once: call with the command's settings,
turn a gRPC error into one line, then show the answer in the output asked for.

    found = calls.ask("GetPolicy", api.GetPolicyRequest(policy_id=policy_id))
    calls.show(found, lambda: render.show_policy(found))
"""

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from . import client, render
from .root import settings


def ask(method: str, request: Message) -> Any:
    """One PolicyService call (`method` by its proto name) to the command's server, with its
    credentials and --timeout; a gRPC error becomes one line on stderr and exit 1."""
    options = settings()
    with client.backup_server(options) as stub:
        return getattr(stub, method)(request, timeout=options.timeout)


def ask_agent(address: str, method: str, request: Message) -> Any:
    """One AgentControl call to the agent at HOST:PORT or unix:PATH, as `ask` does."""
    options = settings()
    with client.agent(address, options) as stub:
        return getattr(stub, method)(request, timeout=options.timeout)


def every_page(method: str, request: Message, field: str, limit: int | None = None) -> list[Any]:
    """The items of `field` over every page of a List method (at most `limit` of them);
    `request` carries the filters, its page_size and page_token are set here."""
    options = settings()
    items: list[Any] = []
    with client.backup_server(options) as stub:
        while limit is None or len(items) < limit:
            if limit is not None:
                request.page_size = limit - len(items)  # type: ignore[attr-defined]
            reply = getattr(stub, method)(request, timeout=options.timeout)
            items.extend(getattr(reply, field))
            request.page_token = reply.next_page_token  # type: ignore[attr-defined]
            if not reply.next_page_token:
                break
    return items


def show(message: Message, text: Callable[[], None], note: str = "") -> None:
    """The answer: `message` as JSON or YAML (-o json, -o yaml), else `note` then `text()`,
    which prints the tables (reading `render.wide()` for -o wide)."""
    output = settings().output
    if output in render.STRUCTURED:
        render.emit(message, output)
        return
    if note:
        render.console().print(note)
    text()
