"""Notifications: one message per session to a real local SMTP server and HTTP receiver."""

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from notify_support import Mailbox, Receiver

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server import notify
from backup_server.app import BackupServer

from conftest import policy_over, wait_for

StartServer = Callable[..., Awaitable[BackupServer]]
StartAgent = Callable[..., Awaitable[AgentServer]]
SECRET = "hunter2-not-for-logs"


async def start_policy(
    server: BackupServer, policy: pb.BackupPolicy, policy_id: str = "nightly"
) -> pb.PolicySession:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))
        return await stub.StartPolicy(api.StartPolicyRequest(policy_id=policy_id))


async def test_a_failed_session_is_mailed_with_its_counts_and_computers(
    start_server: StartServer,
    mailbox: Mailbox,
    tmp_path: Path,
    source_tree: Path,
    closed_address: str,
    hung_address: str,
) -> None:
    """A session that reached no computer sends one mail to the local SMTP server naming the policy, trigger, outcome, counts and both computers that did not receive it."""
    server = await start_server(notify=(mailbox.url(),))
    computers = [("down", closed_address), ("hung", hung_address)]
    session = await start_policy(server, policy_over(computers, tmp_path, source_tree))
    assert session.state == pb.SESSION_STATE_FAILED

    async def mailed() -> bool:
        return bool(mailbox.mails)

    await wait_for(mailed, 20)
    [mail] = mailbox.mails
    assert mail["Subject"] == "backup start of policy nightly: FAILED"
    assert mail["To"] == "ops@example.com"
    body = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    for expected in (
        "policy: nightly",
        f"session: {session.id} (start, trigger operator)",
        "outcome: failed",
        "2 total, 0 received, 2 not received",
        f"- down ({closed_address}): not received (UNAVAILABLE",
        f"- hung ({hung_address}): not received (DEADLINE_EXCEEDED",
    ):
        assert expected in text, text


async def test_a_json_receiver_gets_the_message_and_no_secret_reaches_the_log(
    start_server: StartServer,
    receiver: Receiver,
    tmp_path: Path,
    source_tree: Path,
    closed_addresses: Callable[[int], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The json:// receiver gets title, body and type with its credentials, a notifier on a closed port is logged as failed, and neither URL's password appears in any log line."""
    caplog.set_level(logging.DEBUG)
    dead_port = closed_addresses(1)[0].rpartition(":")[2]
    server = await start_server(
        notify=(
            f"json://ops:{SECRET}@127.0.0.1:{receiver.port}/hook",
            f"json://ops:{SECRET}-2@127.0.0.1:{dead_port}/hook?retry=1&wait=0",
        )
    )
    computers = [(f"pc-{n}", address) for n, address in enumerate(closed_addresses(25))]
    session = await start_policy(server, policy_over(computers, tmp_path, source_tree))

    async def both_tried() -> bool:
        return bool(receiver.posts) and "failed after" in caplog.text

    await wait_for(both_tried, 30)
    [(posted, authorization)] = receiver.posts
    assert posted["title"] == "backup start of policy nightly: FAILED"
    assert posted["type"] == "failure"
    assert f"session: {session.id}" in posted["message"]
    assert "25 total, 0 received, 25 not received" in posted["message"]
    listed = [line for line in posted["message"].splitlines() if line.startswith("- pc-")]
    assert len(listed) == notify.COMPUTERS_LISTED
    assert "... and 5 more" in posted["message"]
    assert base64.b64decode(authorization.removeprefix("Basic ")) == f"ops:{SECRET}".encode()
    assert "notification sent to json://ops:****@127.0.0.1" in caplog.text
    assert (
        f"notification to json://ops:****@127.0.0.1:{dead_port}/hook failed after 1 retries"
        in caplog.text
    )
    assert SECRET not in caplog.text


async def test_notify_on_chooses_which_outcomes_are_sent(
    start_server: StartServer,
    start_agent: StartAgent,
    receiver: Receiver,
    tmp_path: Path,
    source_tree: Path,
    closed_address: str,
) -> None:
    """With --notify-on failure, a successful and a warning session send nothing and the failed one that follows them is the only message."""
    server = await start_server(notify=(f"json://127.0.0.1:{receiver.port}",), notify_on="failure")
    agent = await start_agent("web-1")
    await start_policy(server, policy_over([("web-1", agent.address)], tmp_path, source_tree), "ok")
    both = [("web-1", agent.address), ("down", closed_address)]
    await start_policy(server, policy_over(both, tmp_path, source_tree), "partly")
    await start_policy(
        server, policy_over([("down", closed_address)], tmp_path, source_tree), "bad"
    )

    async def sent() -> bool:
        return bool(receiver.posts)

    await wait_for(sent, 20)
    await asyncio.sleep(0.2)  # the queue is in order: nothing sent before "bad" may still come
    assert [post["title"] for post, _ in receiver.posts] == ["backup start of policy bad: FAILED"]


def test_each_notify_on_choice_sends_the_outcomes_it_names() -> None:
    """failure sends failed; warning (the default) also warning; always also success."""
    sessions = {
        outcome: pb.PolicySession(policy_id="p", action=pb.SESSION_ACTION_START, state=state)
        for outcome, state in (
            ("failed", pb.SESSION_STATE_FAILED),
            ("warning", pb.SESSION_STATE_WARNING),
            ("success", pb.SESSION_STATE_SUCCESS),
        )
    }
    for choice, sent in (
        ("failure", {"failed"}),
        ("warning", {"failed", "warning"}),
        ("always", {"failed", "warning", "success"}),
    ):
        notifier = notify.Notifier(["json://127.0.0.1:9"], choice)
        wanted = {o for o, s in sessions.items() if notifier.wants(notify.outcome_of(s))}
        assert wanted == sent, choice


def test_a_url_apprise_does_not_know_is_a_clear_start_up_error() -> None:
    """An unknown scheme stops start-up naming the flag and the scheme, never the URL's secrets."""
    with pytest.raises(SystemExit) as refused:
        notify.Notifier(["nosuchscheme://user:topsecret@host"])
    assert "--notify #1 (scheme nosuchscheme)" in str(refused.value)
    assert "topsecret" not in str(refused.value)


async def test_a_notifier_that_hangs_does_not_delay_start_policy(
    start_server: StartServer,
    start_agent: StartAgent,
    tmp_path: Path,
    source_tree: Path,
    hung_address: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a notifier that accepts and never answers, every StartPolicy answers as fast as without one, and messages past the bounded queue are dropped with a log line."""
    monkeypatch.setattr(notify, "QUEUE_LIMIT", 2)
    server = await start_server(
        notify=(f"json://{hung_address}",), notify_on="always", shutdown_grace=0.2
    )
    agent = await start_agent("web-1")
    policy = policy_over([("web-1", agent.address)], tmp_path, source_tree)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        took = []
        for _ in range(6):
            began = time.monotonic()
            session = await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
            took.append(time.monotonic() - began)
            assert session.statistics.received == 1
    # Each start is one live agent on loopback; a notifier in the way would cost seconds.
    assert max(took) < 1.0, took

    async def dropped() -> bool:  # messages leave once each session's outcome is final
        return "notification dropped, 2 already waiting" in caplog.text

    await wait_for(dropped, 20)


async def test_a_failed_job_is_named_in_the_message(
    start_server: StartServer,
    start_agent: StartAgent,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """A session whose job fails on a real agent sends its message once the outcome is final, naming the computer, its job and the job's error."""
    server = await start_server(notify=(f"json://127.0.0.1:{receiver.port}",))
    agent = await start_agent("web-1")
    policy = policy_over([("web-1", agent.address)], tmp_path, tmp_path / "no-such-source")
    await start_policy(server, policy)

    async def sent() -> bool:
        return bool(receiver.posts)

    await wait_for(sent, 20)
    [(posted, _)] = receiver.posts
    assert posted["title"] == "backup start of policy nightly: FAILED"
    assert "jobs: 0 succeeded, 1 failed, 0 stopped, 0 unknown" in posted["message"]
    [line] = [line for line in posted["message"].splitlines() if line.startswith("- web-1")]
    assert f"({agent.address}): job " in line and " failed: " in line, line
