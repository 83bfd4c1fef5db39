"""promtool on what docs/monitoring ships and on real scrapes of a running server and agent."""

import json
import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from metrics_support import scrape

from agent_stub.app import AgentServer
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup_server.app import BackupServer

from conftest import extracted_tool, policy_over, wait_for

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docs" / "monitoring"
METRIC_NAME = re.compile(r"\b((?:backup|grpc_server|process)_[a-z_]+)")


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool as `make test` extracts it (.ci/promtool), or one on PATH; CI never skips."""
    return extracted_tool("prometheus", "promtool")


def run(promtool: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, cwd=MONITORING, timeout=60
    )


def test_alert_rules_are_valid(promtool: str) -> None:
    """promtool check rules accepts alerts.yml."""
    checked = run(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    """promtool test rules runs alerts_test.yml: each alert fires when it should and not before."""
    tested = run(promtool, "test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.fixture
async def scrapes(
    start_server: Callable[..., Awaitable[BackupServer]],
    start_agent: Callable[..., Awaitable[AgentServer]],
    tmp_path: Path,
    source_tree: Path,
    closed_address: str,
) -> dict[str, str]:
    """The scrapes of a server and an agent that ran a real session and a real job."""
    server = await start_server(metrics_listen="127.0.0.1:0")
    agent = await start_agent("web-1", metrics_listen="127.0.0.1:0")
    assert server.metrics is not None and agent.metrics is not None
    computers = [("web-1", agent.address), ("down", closed_address)]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        await stub.CreatePolicy(
            api.CreatePolicyRequest(
                policy_id="nightly", policy=policy_over(computers, tmp_path, source_tree)
            )
        )
        await stub.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))

    async def job_done() -> bool:
        return "backup_agent_jobs_total{" in await scrape(agent.metrics.url)  # type: ignore[union-attr]

    await wait_for(job_done, 20)
    return {"server": await scrape(server.metrics.url), "agent": await scrape(agent.metrics.url)}


async def test_real_scrapes_are_lint_clean(promtool: str, scrapes: dict[str, str]) -> None:
    """promtool check metrics finds nothing to say about the server's or the agent's scrape."""
    for process, text in scrapes.items():
        checked = run(promtool, "check", "metrics", stdin=text)
        problems = checked.stdout + checked.stderr
        assert checked.returncode == 0 and not problems.strip(), (process, problems)


async def test_rules_and_dashboard_use_only_metrics_the_processes_export(
    scrapes: dict[str, str],
) -> None:
    """Every metric the alert rules and the dashboard query is a family a scrape declares."""
    declared = {
        line.split()[2]
        for text in scrapes.values()
        for line in text.splitlines()
        if line.startswith("# TYPE ")
    }
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries.append((MONITORING / "alerts.yml").read_text())
    used = {name for query in queries for name in METRIC_NAME.findall(query)}
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used}
    missing = {
        name for name in families if name not in declared and f"{name}_total" not in declared
    }
    assert not missing, missing
    assert len(dashboard["panels"]) >= 10
