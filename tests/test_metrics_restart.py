"""Gauges derived from stored state survive a restart: reloaded from storage at start-up."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2
from metrics_support import final_session, samples, scrape, value
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import policy_over, wait_for

LAST_SUCCESS = "backup_computer_last_success_timestamp_seconds"


def series(text: str, name: str, **labels: str) -> bool:
    """Whether the scrape has that series at all (absent is not the same as 0)."""
    return (name, frozenset(labels.items())) in samples(text)


async def test_a_restarted_server_reports_the_last_successes_and_outcomes_it_stored(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[..., Awaitable[AgentServer]],
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """After real jobs succeed (policy good) and fail (policy bad), a server restarted on the same database reports each computer's last success with the same value and each policy's last outcome, and no series for a computer removed from its policy since."""
    agents = [await start_agent(name) for name in ("web-1", "web-2")]
    computers = [(agent.config.name, agent.address) for agent in agents]
    first = await start_server(metrics_listen="127.0.0.1:0")
    async with grpc.aio.insecure_channel(first.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        ended = {}
        for policy_id, source in (("good", source_tree), ("bad", tmp_path / "no-such-source")):
            policy = policy_over(computers, tmp_path, source)
            await stub.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))
            started = await stub.StartPolicy(api.StartPolicyRequest(policy_id=policy_id))
            session = await final_session(stub, started.id)
            ended[policy_id] = {r.computer.name: r.job for r in session.computer_results}
        assert [job.state for job in ended["good"].values()] == [pb.JOB_STATE_SUCCEEDED] * 2
        await stub.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=pb.BackupPolicy(id="good", computers=[pb.Computer(name=computers[0][0], address=computers[0][1])]),
                update_mask=field_mask_pb2.FieldMask(paths=["computers"]),
            )
        )  # fmt: skip
    assert first.metrics is not None
    before = await scrape(first.metrics.url)
    await first.stop()

    second = await start_server(metrics_listen="127.0.0.1:0")
    assert second.metrics is not None
    url = second.metrics.url
    text = ""

    async def reloaded() -> bool:  # in the background: the server serves before it is done
        nonlocal text
        text = await scrape(url)
        return series(text, LAST_SUCCESS, policy="good", computer="web-1") and all(
            series(text, "backup_last_session_outcome", policy=policy_id, action="start", outcome=outcome)
            for policy_id, outcome in (("good", "success"), ("bad", "failed"))
        )  # fmt: skip

    await wait_for(reloaded, 20)
    web_1 = ended["good"]["web-1"].end_time.ToNanoseconds() / 1e9
    assert value(text, LAST_SUCCESS, policy="good", computer="web-1") == web_1
    assert value(before, LAST_SUCCESS, policy="good", computer="web-1") == web_1
    assert not series(text, LAST_SUCCESS, policy="good", computer="web-2")
    assert not series(text, LAST_SUCCESS, policy="bad", computer="web-1")
    for policy_id, outcome, jobs in (("good", "success", "succeeded"), ("bad", "failed", "failed")):
        start = {"policy": policy_id, "action": "start"}
        assert value(text, "backup_last_session_outcome", **start, outcome=outcome) == 1
        assert value(before, "backup_last_session_outcome", **start, outcome=outcome) == 1
        assert value(text, "backup_last_session_jobs", **start, state=jobs) == 2
        assert value(text, "backup_last_session_deliveries", **start, delivery="received") == 2
    # Counters start again from zero: they count what this process saw (rate() copes).
    assert value(text, "backup_sessions_total", policy="good", action="start", trigger="operator", outcome="success") == 0  # fmt: skip
