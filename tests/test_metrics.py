"""Prometheus metrics of the server and the agent, read by real scrapes over HTTP(S)."""

import concurrent.futures
import re
import ssl
import urllib.error
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from metrics_support import client_context, fetch, final_session, scrape, value
from security_support import TOKEN, Pki

from agent_stub.app import AgentServer
from backup.metrics import MetricsEndpoint, new_registry
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server import __main__ as server_main
from backup_server.app import BackupServer

from conftest import Process, job_ends, policy_over

StartServer = Callable[..., Awaitable[BackupServer]]
StartAgent = Callable[..., Awaitable[AgentServer]]


async def test_server_scrape_counts_deliveries_sessions_and_calls(
    start_server: StartServer,
    start_agent: StartAgent,
    tmp_path: Path,
    source_tree: Path,
    closed_address: str,
    hung_address: str,
) -> None:
    """A session to a live agent, a closed port and a hung computer shows in the scrape: deliveries by kind, the session's outcome, its delivery time, and the gRPC calls by code."""
    server = await start_server(metrics_listen="127.0.0.1:0", reconcile_for=0.5)
    agent = await start_agent("web-1")
    assert server.metrics is not None
    computers = [("web-1", agent.address), ("down", closed_address), ("hung", hung_address)]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(
            api.CreatePolicyRequest(
                policy_id="nightly", policy=policy_over(computers, tmp_path, source_tree)
            )
        )
        session = await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetPolicy(api.GetPolicyRequest(policy_id="missing"))
        session = await final_session(stub, session.id)
    assert session.statistics.received == 1 and session.statistics.not_received == 2
    assert session.outcome == pb.SESSION_STATE_WARNING

    text = await scrape(server.metrics.url)
    start = {"policy": "nightly", "action": "start"}
    assert value(text, "backup_deliveries_total", **start, delivery="received") == 1
    assert value(text, "backup_deliveries_total", **start, delivery="not_received") == 2
    assert value(text, "backup_deliveries_total", **start, delivery="rejected") == 0
    assert value(text, "backup_sessions_total", **start, trigger="operator", outcome="warning") == 1
    assert value(text, "backup_last_session_outcome", **start, outcome="warning") == 1
    assert value(text, "backup_last_session_outcome", **start, outcome="failed") == 0
    assert value(text, "backup_last_session_deliveries", **start, delivery="not_received") == 2
    assert value(text, "backup_session_delivery_seconds_count", action="start") == 1
    # The hung computer held the session for its deadline (1 s in tests).
    assert value(text, "backup_session_delivery_seconds_sum", action="start") >= 0.9
    service = {"grpc_service": "backup.v1.PolicyService"}
    assert (
        value(
            text, "grpc_server_handled_total", **service, grpc_method="StartPolicy", grpc_code="OK"
        )
        == 1
    )
    assert (
        value(
            text,
            "grpc_server_handled_total",
            **service,
            grpc_method="GetPolicy",
            grpc_code="NOT_FOUND",
        )
        == 1
    )
    assert (
        value(text, "grpc_server_handling_seconds_count", **service, grpc_method="CreatePolicy")
        == 1
    )
    assert value(text, "process_resident_memory_bytes") > 0


async def test_agent_scrape_counts_real_jobs(
    start_agent: StartAgent,
    agent_control: Callable[[str], object],
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """After a job that backs files up and one whose source is missing, the agent's scrape counts one succeeded and one failed job, their time, the bytes read and written, and the last success."""
    agent = await start_agent("web-1", metrics_listen="127.0.0.1:0")
    assert agent.metrics is not None
    control = agent_control(agent.address)
    good = policy_over([], tmp_path, source_tree)
    good.id = "good"
    bad = policy_over([], tmp_path, tmp_path / "no-such-source")
    bad.id = "bad"
    ended = {}
    for policy in (good, bad):
        reply = await control.StartJob(  # type: ignore[attr-defined]
            agent_api.StartJobRequest(session_id=f"s-{policy.id}", policy=policy)
        )
        ended[policy.id] = await job_ends(control, reply.job.id)  # type: ignore[arg-type]
    assert ended["good"].state == pb.JOB_STATE_SUCCEEDED
    assert ended["bad"].state == pb.JOB_STATE_FAILED

    text = await scrape(agent.metrics.url)
    assert value(text, "backup_agent_jobs_total", policy="good", state="succeeded") == 1
    assert value(text, "backup_agent_jobs_total", policy="bad", state="failed") == 1
    assert value(text, "backup_agent_jobs_total", policy="good", state="failed") == 0
    assert value(text, "backup_agent_job_duration_seconds_count", policy="good") == 1
    assert (
        value(text, "backup_agent_read_bytes_total", policy="good") == ended["good"].bytes_read > 0
    )
    assert (
        value(text, "backup_agent_written_bytes_total", policy="good")
        == ended["good"].bytes_written
        > 0
    )
    assert value(
        text, "backup_agent_last_success_timestamp_seconds", policy="good"
    ) == pytest.approx(ended["good"].end_time.ToNanoseconds() / 1e9)
    assert value(text, "backup_agent_last_success_timestamp_seconds", policy="bad") == 0
    assert (
        value(
            text,
            "grpc_server_handled_total",
            grpc_service="backup.v1.AgentControl",
            grpc_method="StartJob",
            grpc_code="OK",
        )
        == 2
    )


async def test_restarted_agent_reports_its_last_success_from_history(
    start_agent: StartAgent,
    agent_control: Callable[[str], object],
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """An agent restarted after a successful job reports that job's end as the last success before running any new job."""
    first = await start_agent("web-1")
    policy = policy_over([], tmp_path, source_tree)
    policy.id = "good"
    control = agent_control(first.address)
    reply = await control.StartJob(agent_api.StartJobRequest(session_id="s1", policy=policy))  # type: ignore[attr-defined]
    job = await job_ends(control, reply.job.id)  # type: ignore[arg-type]
    await first.stop()
    again = await start_agent("web-1", metrics_listen="127.0.0.1:0")
    assert again.metrics is not None
    text = await scrape(again.metrics.url)
    assert value(
        text, "backup_agent_last_success_timestamp_seconds", policy="good"
    ) == pytest.approx(job.end_time.ToNanoseconds() / 1e9)
    assert value(text, "backup_agent_jobs_total", policy="good", state="succeeded") == 0


async def test_metrics_over_tls_answer_only_operators(start_server: StartServer, pki: Pki) -> None:
    """With TLS material the endpoint is HTTPS with the server's certificate: an operator's certificate reads it, the server's own role is refused with 403, and no certificate fails the handshake."""
    server = await start_server(tls=pki.tls(pki.issued("server")), metrics_listen="127.0.0.1:0")
    assert server.metrics is not None and server.metrics.url.startswith("https://")
    operator = pki.issued("operator")
    text = await scrape(server.metrics.url, client_context(pki.ca, operator.cert, operator.key))
    assert "# TYPE backup_sessions_total counter" in text
    wrong_role = pki.issued("server")
    with pytest.raises(urllib.error.HTTPError) as refused:
        await scrape(server.metrics.url, client_context(pki.ca, wrong_role.cert, wrong_role.key))
    assert refused.value.code == 403
    refused.value.close()
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        await scrape(server.metrics.url, client_context(pki.ca))


def test_plaintext_metrics_refuse_a_non_loopback_address() -> None:
    """Without TLS material the endpoint, like the gRPC port, will not listen off loopback unless told --insecure."""
    endpoint = MetricsEndpoint(new_registry(), "0.0.0.0:0")
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0:0 in plaintext"):
        endpoint.start()
    allowed = MetricsEndpoint(new_registry(), "0.0.0.0:0", insecure=True)
    allowed.start()
    try:
        assert allowed.port > 0
    finally:
        allowed.stop()


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:http"])
def test_a_bad_metrics_address_is_one_clear_line(listen: str) -> None:
    """A --metrics-listen that is not HOST:PORT stops start-up with a line naming the flag."""
    with pytest.raises(SystemExit, match="--metrics-listen"):
        MetricsEndpoint(new_registry(), listen).start()


async def test_a_scrape_does_not_wait_for_the_event_loop(start_server: StartServer) -> None:
    """The endpoint serves from its own thread: a scrape answers while the event loop is busy."""
    server = await start_server(metrics_listen="127.0.0.1:0")
    assert server.metrics is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # result() blocks the event loop itself until the scrape has answered.
        text = pool.submit(fetch, server.metrics.url).result(timeout=10)
    assert "backup_deliveries_total" in text


async def test_refused_calls_are_counted_with_their_code(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A call without the required token is counted as UNAUTHENTICATED: the call counters sit before the authorizer."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    server = await start_server(api_token_file=token, metrics_listen="127.0.0.1:0")
    assert server.metrics is not None
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListPolicies(api.ListPoliciesRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    text = await scrape(server.metrics.url)
    assert (
        value(
            text,
            "grpc_server_handled_total",
            grpc_service="backup.v1.PolicyService",
            grpc_method="ListPolicies",
            grpc_code="UNAUTHENTICATED",
        )
        == 1
    )


def test_the_command_lines_take_the_monitoring_flags() -> None:
    """backup-server takes --metrics-listen, repeated --notify and --notify-on (default warning); other choices are refused."""
    config = server_main.parse_args(
        [
            "--metrics-listen", "127.0.0.1:9464",
            "--notify", "json://127.0.0.1:1/a",
            "--notify", "mailto://127.0.0.1:2?to=ops@example.com",
            "--notify-on", "failure",
        ]
    )  # fmt: skip
    assert config.metrics_listen == "127.0.0.1:9464"
    assert config.notify == ("json://127.0.0.1:1/a", "mailto://127.0.0.1:2?to=ops@example.com")
    assert config.notify_on == "failure"
    assert server_main.parse_args([]).notify_on == "warning"
    with pytest.raises(SystemExit):
        server_main.parse_args(["--notify-on", "sometimes"])


def test_the_processes_serve_metrics_from_their_command_lines(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    """backup-server and backup-agent started with --metrics-listen 127.0.0.1:0 log where their metrics are, and a scrape there answers with their own families."""
    server = spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "s.db"),
        "--metrics-listen", "127.0.0.1:0",
    )  # fmt: skip
    agent = spawn(
        "agent_stub", "--listen", "127.0.0.1:0", "--name", "a1",
        "--data-dir", str(tmp_path / "a1"), "--metrics-listen", "127.0.0.1:0",
    )  # fmt: skip
    for process, family in (
        (server, "backup_deliveries_total"),
        (agent, "backup_agent_jobs_total"),
    ):
        found = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", process.log.read_text())
        assert found, process.log.read_text()
        text = fetch(found[1])
        assert f"# TYPE {family} counter" in text
        assert "# TYPE grpc_server_handled_total counter" in text
