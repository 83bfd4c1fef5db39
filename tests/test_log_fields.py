"""WARNING lines about one computer carry policy, computer, session and job as JSON fields."""

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from metrics_support import final_session

from agent_stub.app import AgentServer
from backup.logs import JsonFormatter
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer

from conftest import job_ends, policy_over


def json_warnings(caplog: pytest.LogCaptureFixture, starting: str) -> list[dict[str, str]]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.levelno == logging.WARNING and record.getMessage().startswith(starting)
    ]


async def test_a_computer_that_did_not_receive_is_a_warning_with_fields(
    start_server: Callable[..., Awaitable[BackupServer]],
    tmp_path: Path,
    source_tree: Path,
    closed_address: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The not-received line, in --log-format json, has the policy, computer, address, code and session as fields."""
    server = await start_server()
    policy = policy_over([("down", closed_address)], tmp_path, source_tree)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly", session_id="s-1"))
    [line] = json_warnings(caplog, "not received")
    assert line["level"] == "WARNING"
    assert {
        key: line[key] for key in ("policy_id", "computer", "address", "code", "session_id")
    } == {
        "policy_id": "nightly",
        "computer": "down",
        "address": closed_address,
        "code": "UNAVAILABLE",
        "session_id": "s-1",
    }


async def test_a_failed_job_is_a_warning_with_fields(
    start_agent: Callable[..., Awaitable[AgentServer]],
    agent_control: Callable[[str], object],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose source is missing ends in a WARNING line whose JSON form has the policy, computer, session and job."""
    agent = await start_agent("web-1")
    control = agent_control(agent.address)
    policy = policy_over([], tmp_path, tmp_path / "no-such-source")
    policy.id = "nightly"
    reply = await control.StartJob(  # type: ignore[attr-defined]
        agent_api.StartJobRequest(session_id="s-1", policy=policy)
    )
    job = await job_ends(control, reply.job.id)  # type: ignore[arg-type]
    assert job.state == pb.JOB_STATE_FAILED
    [line] = json_warnings(caplog, f"job {job.id}")
    assert "failed" in line["message"]
    assert {key: line[key] for key in ("policy_id", "computer", "session_id", "job_id")} == {
        "policy_id": "nightly",
        "computer": "web-1",
        "session_id": "s-1",
        "job_id": job.id,
    }


async def test_a_job_the_server_followed_to_failure_is_a_warning_with_fields(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[..., Awaitable[AgentServer]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's own line for a followed job that failed, in --log-format json, has the policy, computer, address, session and job as fields."""
    server = await start_server()
    agent = await start_agent("web-1")
    policy = policy_over([("web-1", agent.address)], tmp_path, tmp_path / "no-such-source")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        started = await stub.StartPolicy(
            api.StartPolicyRequest(policy_id="nightly", session_id="s-1")
        )
        session = await final_session(stub, started.id)
    job = session.computer_results[0].job
    assert job.state == pb.JOB_STATE_FAILED
    [line] = [
        line
        for line in json_warnings(caplog, "session s-1: job")
        if line["logger"] == "backup_server.tracking"
    ]
    assert f"job {job.id} on computer web-1 ({agent.address}) failed: " in line["message"]
    assert {
        key: line[key] for key in ("policy_id", "computer", "address", "session_id", "job_id")
    } == {
        "policy_id": "nightly",
        "computer": "web-1",
        "address": agent.address,
        "session_id": "s-1",
        "job_id": job.id,
    }
