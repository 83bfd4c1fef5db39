"""Retries in a real server with real agents: only the computers that did not succeed, attempts, supersession, restarts."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both
from scheduler_support import ManualClock

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import policy_over, wait_for

Start = Callable[..., Awaitable[BackupServer]]
FINAL = (pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_WARNING, pb.SESSION_STATE_FAILED)


class Operator:
    """A PolicyService client of one server, with the waits these tests need."""

    def __init__(self, stub: api_grpc.PolicyServiceStub, server: BackupServer | None = None) -> None:
        self.stub = stub
        self.server = server

    async def sessions(self) -> list[pb.PolicySession]:
        listed = await self.stub.ListSessions(api.ListSessionsRequest(policy_id="nightly", page_size=100))
        return [await self.final(s.id) for s in reversed(listed.sessions)]

    async def final(self, session_id: str) -> pb.PolicySession:
        """The session once its outcome is final."""
        found = pb.PolicySession()

        async def done() -> bool:
            found.CopyFrom(await self.stub.GetSession(api.GetSessionRequest(session_id=session_id)))
            return found.outcome in FINAL

        await wait_for(done, 20)
        return found

    async def advance(self, clock: ManualClock, to: datetime) -> None:
        clock.current = to
        assert self.server is not None and self.server.scheduler is not None
        self.server.scheduler.wake()
        await asyncio.sleep(0.1)
        await self.server.scheduler.idle()


def retrying(computers: list[tuple[str, str]], tmp_path: Path, source: Path, attempts: int) -> pb.BackupPolicy:
    return policy_over(computers, tmp_path, source, retry=pb.RetryPolicy(attempts=attempts, interval=duration_pb2.Duration(seconds=60)))


@asynccontextmanager
async def operating(start_server: Start, policy: pb.BackupPolicy) -> AsyncIterator[tuple[Operator, ManualClock, datetime]]:
    """A server on a manual clock holding `policy` as "nightly", its operator, the clock and its start."""
    now = datetime.now(UTC)
    clock = ManualClock(now)
    server = await start_server(clock=clock)
    async with grpc.aio.insecure_channel(server.address) as channel:
        operator = Operator(api_grpc.PolicyServiceStub(channel), server)
        await operator.stub.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        yield operator, clock, now


def names(session: pb.PolicySession) -> list[str]:
    return [r.computer.name for r in session.computer_results]


async def test_an_operator_retry_starts_only_what_did_not_succeed(policy_service, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """retry_of_session_id starts only the computer that was not received, with trigger OPERATOR, that session's id and attempt 0."""
    agent = await start_agent("a1")
    await policy_service.CreatePolicy(api.CreatePolicyRequest(
        policy_id="nightly", policy=policy_over([("a1", agent.address), ("gone", closed_address)], tmp_path, source_tree),
    ))  # fmt: skip
    both = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    settled = await Operator(policy_service).final(both.id)
    assert settled.outcome == pb.SESSION_STATE_WARNING
    retried = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly", retry_of_session_id=both.id))
    assert names(retried) == ["gone"]
    assert (retried.trigger, retried.retry_of_session_id, retried.attempt) == (pb.SESSION_TRIGGER_OPERATOR, both.id, 0)


async def test_retries_target_the_failed_computer_until_attempts_run_out(start_server: Start, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """With 2 attempts 60 s apart, the unreachable computer alone is retried twice (RETRY, attempt 1 and 2, the original's id), then no more."""
    agent = await start_agent("a1")
    async with operating(start_server, retrying([("a1", agent.address), ("gone", closed_address)], tmp_path, source_tree, 2)) as (operator, clock, now):
        original = await operator.final((await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))).id)
        await operator.advance(clock, now + timedelta(seconds=30))
        assert len(await operator.sessions()) == 1
        for minutes in (2, 4, 6, 8):
            await operator.advance(clock, now + timedelta(minutes=minutes))
            await operator.sessions()  # every outcome final before the clock moves on
        original_again, *retries = await operator.sessions()
    assert original_again.id == original.id
    assert [(r.trigger, r.attempt, r.retry_of_session_id) for r in retries] == [
        (pb.SESSION_TRIGGER_RETRY, 1, original.id), (pb.SESSION_TRIGGER_RETRY, 2, original.id)
    ]
    assert all(names(r) == ["gone"] for r in retries)


async def test_retries_stop_once_every_computer_succeeded(start_server: Start, start_agent, tmp_path: Path, source_tree: Path) -> None:
    """A job that failed (its source was missing) is retried once the interval passed; it succeeds and no second retry follows."""
    agent = await start_agent("a1")
    missing = tmp_path / "later"
    async with operating(start_server, retrying([("a1", agent.address)], tmp_path, missing, 5)) as (operator, clock, now):
        first = await operator.final((await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))).id)
        assert first.outcome == pb.SESSION_STATE_FAILED
        missing.mkdir()
        (missing / "file.txt").write_text("here now\n")
        await operator.advance(clock, now + timedelta(minutes=2))
        await operator.sessions()
        await operator.advance(clock, now + timedelta(minutes=10))
        sessions = await operator.sessions()
    assert [(s.trigger, s.outcome) for s in sessions] == [
        (pb.SESSION_TRIGGER_OPERATOR, pb.SESSION_STATE_FAILED), (pb.SESSION_TRIGGER_RETRY, pb.SESSION_STATE_SUCCESS)
    ]


async def test_an_operator_start_supersedes_the_pending_retry(start_server: Start, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """A newer operator start of the policy before the retry is due means no retry of the older session is made."""
    agent = await start_agent("a1")
    async with operating(start_server, retrying([("a1", agent.address), ("gone", closed_address)], tmp_path, source_tree, 3)) as (operator, clock, now):
        await operator.final((await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))).id)
        newer = await operator.final((await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly", computer_names=["a1"]))).id)
        assert newer.outcome == pb.SESSION_STATE_SUCCESS
        await operator.advance(clock, now + timedelta(minutes=5))
        sessions = await operator.sessions()
    assert [s.trigger for s in sessions] == [pb.SESSION_TRIGGER_OPERATOR] * 2


async def test_a_retry_that_fell_due_while_the_server_was_down_runs_at_start_up(start_server: Start, start_agent, tmp_path: Path, source_tree: Path, closed_address: str) -> None:
    """The retry state is the stored sessions: a server restarted after the interval makes attempt 1 at once."""
    agent = await start_agent("a1")
    now = datetime.now(UTC)
    first = await start_server(clock=ManualClock(now))
    async with grpc.aio.insecure_channel(first.address) as channel:
        operator = Operator(api_grpc.PolicyServiceStub(channel), first)
        await operator.stub.CreatePolicy(api.CreatePolicyRequest(
            policy_id="nightly", policy=retrying([("a1", agent.address), ("gone", closed_address)], tmp_path, source_tree, 1),
        ))  # fmt: skip
        original = await operator.final((await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))).id)
    await first.stop()
    second = await start_server(clock=ManualClock(now + timedelta(minutes=5)))
    async with grpc.aio.insecure_channel(second.address) as channel:
        operator = Operator(api_grpc.PolicyServiceStub(channel), second)

        async def retried() -> bool:
            return len(await operator.sessions()) == 2

        await wait_for(retried, 20)
        _, retry = await operator.sessions()
    assert (retry.trigger, retry.attempt, retry.retry_of_session_id, names(retry)) == (
        pb.SESSION_TRIGGER_RETRY, 1, original.id, ["gone"]
    )


async def test_a_short_retry_starts_on_time_on_the_real_clock(
    start_server: Start, start_agent, tmp_path: Path
) -> None:
    """On the real clock, a retry due 1 s after a job failed starts within a few seconds: the scheduler, woken as the outcome becomes final, decides on it before it is stored (it used to see RUNNING then and sleep its 30 s)."""
    agent = await start_agent("a1")
    retry = pb.RetryPolicy(attempts=1, interval=duration_pb2.Duration(seconds=1))
    policy = policy_over(
        [("a1", agent.address)], tmp_path, tmp_path / "no-such-source", retry=retry
    )
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        operator = Operator(api_grpc.PolicyServiceStub(channel), server)
        await operator.stub.CreatePolicy(
            api.CreatePolicyRequest(policy_id="nightly", policy=policy)
        )
        started = await operator.stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        failed = await operator.final(started.id)

        async def retried() -> bool:
            listed = await operator.stub.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
            return any(s.retry_of_session_id == started.id for s in listed.sessions)

        await wait_for(retried, 8)
    assert failed.outcome == pb.SESSION_STATE_FAILED
