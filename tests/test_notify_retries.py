"""A retry chain's notifications: one message per session, the last attempt's saying it gave up."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from notify_support import Mailbox, Receiver, mail_text
from scheduler_support import ManualClock

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server import notify
from backup_server.app import BackupServer

from conftest import policy_over, wait_for

FINAL = (pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_WARNING, pb.SESSION_STATE_FAILED)


async def settle(server: BackupServer, clock: ManualClock, to: datetime) -> None:
    """Moves the scheduler's clock and waits for what it started to be delivered."""
    assert server.scheduler is not None
    clock.current = to
    server.scheduler.wake()
    await asyncio.sleep(0.1)
    await server.scheduler.idle()


async def final_sessions(stub: api_grpc.PolicyServiceStub, count: int) -> list[pb.PolicySession]:
    """The policy's first `count` sessions, oldest first, once each outcome is final."""
    found: list[pb.PolicySession] = []

    async def all_final() -> bool:
        listed = await stub.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
        found[:] = list(reversed(listed.sessions))
        return len(found) >= count and all(s.outcome in FINAL for s in found)

    await wait_for(all_final, 30)
    return found


async def test_a_scheduled_chain_says_a_retry_follows_then_that_it_gave_up(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[..., Awaitable[AgentServer]],
    mailbox: Mailbox,
    receiver: Receiver,
    tmp_path: Path,
    source_tree: Path,
    closed_addresses: Callable[[int], list[str]],
) -> None:
    """A scheduled start with 2 retries sends exactly three messages to both the SMTP server and the json:// receiver: the first two say which attempt follows and when, the last (attempt 2 of 2) says the retries are exhausted and how many computers still did not succeed."""
    now = datetime.now(UTC).replace(microsecond=0)
    due = now.replace(second=0) + timedelta(minutes=2)
    clock = ManualClock(now)
    server = await start_server(
        clock=clock, notify=(mailbox.url(), f"json://127.0.0.1:{receiver.port}")
    )
    agent = await start_agent("web-1")
    down = [(f"down-{n}", address) for n, address in enumerate(closed_addresses(2))]
    policy = policy_over(
        [("web-1", agent.address), *down],
        tmp_path,
        source_tree,
        schedule=pb.Schedule(cron=f"{due.minute} {due.hour} * * *"),
        retry=pb.RetryPolicy(attempts=2, interval=duration_pb2.Duration(seconds=60)),
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        # The outcome times retries count from are real time; the clock runs ahead of it.
        for count, minutes in ((1, 0), (2, 3), (3, 6)):
            await settle(server, clock, due + timedelta(minutes=minutes, seconds=1))
            sessions = await final_sessions(stub, count)
        await settle(server, clock, due + timedelta(minutes=12))
        sessions = await final_sessions(stub, 3)

    async def all_sent() -> bool:
        return len(receiver.posts) >= 3 and len(mailbox.mails) >= 3

    await wait_for(all_sent, 30)
    await asyncio.sleep(0.5)  # nothing else may follow: one message per session
    assert len(sessions) == 3
    assert [(s.trigger, s.attempt) for s in sessions] == [
        (pb.SESSION_TRIGGER_SCHEDULE, 0),
        (pb.SESSION_TRIGGER_RETRY, 1),
        (pb.SESSION_TRIGGER_RETRY, 2),
    ]
    posted = [post for post, _ in receiver.posts]
    texts = [mail_text(mail) for mail in mailbox.mails]
    for messages in ([post["message"] for post in posted], texts):
        for session, message in zip(sessions, messages, strict=True):
            assert f"session: {session.id} (start, trigger " in message, message
        first, second, last = messages
        assert "retry follows: attempt 1 of 2 at " in first and "for 2 computers" in first
        assert "retry follows: attempt 2 of 2 at " in second and "for 2 computers" in second
        assert "retries exhausted: attempt 2 of 2; 2 computers still did not succeed" in last
        assert not any(notify.GAVE_UP in message for message in (first, second))
        assert "retry follows" not in last
    # The announced time is when the scheduler makes the retry: interval after the outcome.
    announced = first_due(posted[0]["message"])
    expected = sessions[0].outcome_time.ToDatetime(tzinfo=UTC) + timedelta(seconds=60)
    assert abs((announced - expected).total_seconds()) < 1.0
    titles = [post["title"] for post in posted]
    assert titles == [
        "backup start of policy nightly: WARNING",
        "backup start of policy nightly: FAILED",
        "backup start of policy nightly: FAILED (retries exhausted)",
    ]
    assert [mail["Subject"] for mail in mailbox.mails] == titles


def first_due(message: str) -> datetime:
    """The instant a "retry follows" line announces."""
    [line] = [line for line in message.splitlines() if line.startswith("retry follows")]
    stamp = line.split(" at ", 1)[1].split(" for ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def test_a_chain_that_cannot_go_on_says_why_and_a_policy_without_retries_says_nothing() -> None:
    """retry_note: nothing without retries or with every computer succeeded, the paused schedule named, and the last attempt's exhaustion counted by the computers still not succeeded."""
    failed = pb.PolicySession(
        id="s-1",
        action=pb.SESSION_ACTION_START,
        outcome=pb.SESSION_STATE_FAILED,
        attempt=3,
        computer_results=[
            pb.ComputerResult(computer=pb.Computer(name=f"pc-{n}"), delivery=delivery)
            for n, delivery in enumerate(
                [pb.DELIVERY_NOT_RECEIVED] * 3 + [pb.DELIVERY_REJECTED, pb.DELIVERY_SKIPPED]
            )
        ],
    )
    failed.outcome_time.GetCurrentTime()
    retries = pb.RetryPolicy(attempts=3, interval=duration_pb2.Duration(seconds=60))
    assert notify.retry_note(pb.BackupPolicy(id="p"), failed) == ""
    assert notify.retry_note(None, failed) == ""
    assert notify.retry_note(pb.BackupPolicy(id="p", retry=retries), failed) == (
        "retries exhausted: attempt 3 of 3; 4 computers still did not succeed"
    )
    failed.attempt = 1
    paused = pb.BackupPolicy(
        id="p", retry=retries, schedule=pb.Schedule(cron="0 3 * * *", paused=True)
    )
    assert notify.retry_note(paused, failed) == "no retry follows: the policy's schedule is paused"
    succeeded = pb.PolicySession(action=pb.SESSION_ACTION_START, outcome=pb.SESSION_STATE_SUCCESS)
    assert notify.retry_note(pb.BackupPolicy(id="p", retry=retries), succeeded) == ""
    message = notify.session_message(failed, "retries exhausted: attempt 3 of 3; 4 computers")
    assert message.title.endswith(": FAILED (retries exhausted)")
