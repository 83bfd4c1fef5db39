"""Metrics of followed jobs: sessions counted by outcome, jobs by end, each computer's last success."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from metrics_support import final_session, scrape, value
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import policy_over, wait_for

StartServer = Callable[..., Awaitable[BackupServer]]
StartAgent = Callable[..., Awaitable[AgentServer]]


async def test_followed_jobs_count_sessions_jobs_and_last_success(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path, source_tree: Path
) -> None:
    """A policy whose job succeeds and one whose source is missing: once their outcomes are final the scrape counts a success and a failure, a succeeded and a failed job, and the good computer's last success at its job's end."""
    server = await start_server(metrics_listen="127.0.0.1:0")
    agent = await start_agent("web-1")
    assert server.metrics is not None
    computers = [("web-1", agent.address)]
    sessions = {}
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        for policy_id, source in (("good", source_tree), ("bad", tmp_path / "no-such-source")):
            policy = policy_over(computers, tmp_path, source)
            await stub.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))
            started = await stub.StartPolicy(api.StartPolicyRequest(policy_id=policy_id))
            sessions[policy_id] = await final_session(stub, started.id)
    assert sessions["good"].outcome == pb.SESSION_STATE_SUCCESS
    assert sessions["bad"].outcome == pb.SESSION_STATE_FAILED
    good_job = sessions["good"].computer_results[0].job
    assert good_job.state == pb.JOB_STATE_SUCCEEDED

    text = await scrape(server.metrics.url)
    for policy_id, outcome, state in (
        ("good", "success", "succeeded"),
        ("bad", "failed", "failed"),
    ):
        start = {"policy": policy_id, "action": "start"}
        assert (
            value(text, "backup_sessions_total", **start, trigger="operator", outcome=outcome) == 1
        )
        assert value(text, "backup_jobs_finished_total", policy=policy_id, state=state) == 1
        assert value(text, "backup_last_session_outcome", **start, outcome=outcome) == 1
        assert value(text, "backup_last_session_jobs", **start, state=state) == 1
        assert value(text, "backup_last_session_jobs", **start, state="unknown") == 0
    assert value(text, "backup_jobs_finished_total", policy="good", state="failed") == 0
    assert (
        value(
            text, "backup_computer_last_success_timestamp_seconds", policy="good", computer="web-1"
        )
        == good_job.end_time.ToNanoseconds() / 1e9
    )
    assert (
        value(
            text, "backup_computer_last_success_timestamp_seconds", policy="bad", computer="web-1"
        )
        == 0
    )
    assert value(text, "backup_jobs_followed") == 0


async def test_jobs_followed_shows_a_running_job_until_it_ends(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path, source_tree: Path
) -> None:
    """While a throttled job runs the server reports one job followed; once it has ended, none, and the job is counted as finished once."""
    server = await start_server(metrics_listen="127.0.0.1:0")
    agent = await start_agent("web-1")
    assert server.metrics is not None
    url = server.metrics.url
    policy = policy_over(
        [("web-1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=32 * 1024
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="slow", policy=policy))
        started = await stub.StartPolicy(api.StartPolicyRequest(policy_id="slow"))

        async def followed(count: int) -> bool:
            return value(await scrape(url), "backup_jobs_followed") == count

        await wait_for(lambda: followed(1), 10)
        session = await final_session(stub, started.id)
    assert session.outcome == pb.SESSION_STATE_SUCCESS
    await wait_for(lambda: followed(0), 10)
    text = await scrape(url)
    assert value(text, "backup_jobs_finished_total", policy="slow", state="succeeded") == 1
    assert (
        value(
            text,
            "backup_sessions_total",
            policy="slow",
            action="start",
            trigger="operator",
            outcome="success",
        )
        == 1
    )


async def test_a_job_two_sessions_follow_is_counted_finished_once(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path, source_tree: Path
) -> None:
    """A second start finds the first start's job still running and follows it too: once both outcomes are final, that one job is counted as finished once, by the session that started it."""
    server = await start_server(metrics_listen="127.0.0.1:0")
    agent = await start_agent("web-1")
    assert server.metrics is not None
    policy = policy_over(
        [("web-1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=32 * 1024
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="slow", policy=policy))
        first = await stub.StartPolicy(api.StartPolicyRequest(policy_id="slow"))
        second = await stub.StartPolicy(api.StartPolicyRequest(policy_id="slow"))
        assert "already running" in second.computer_results[0].detail
        sessions = [await final_session(stub, started.id) for started in (first, second)]
    assert [s.statistics.jobs_succeeded for s in sessions] == [1, 1]
    assert sessions[0].computer_results[0].job.id == sessions[1].computer_results[0].job.id
    text = await scrape(server.metrics.url)
    assert value(text, "backup_jobs_finished_total", policy="slow", state="succeeded") == 1
