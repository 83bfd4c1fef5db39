"""The Node.js example client, loading protos/ at run time, against a live server and agents."""

import asyncio
import shutil
import subprocess
from pathlib import Path

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

from conftest import policy_over

CLIENT_DIR = Path(__file__).resolve().parent.parent / "examples" / "node"


async def node_client(*args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is needed (the Makefile assumes it)"
    assert (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "run `make test`: it npm-installs examples/node"
    )
    return await asyncio.to_thread(
        subprocess.run,
        [node, str(CLIENT_DIR / "client.js"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_node_client_lists_starts_and_prints_deliveries(
    server, policy_service: api_grpc.PolicyServiceStub, start_agent,
    closed_address: str, hung_address: str, tmp_path: Path, source_tree: Path,
) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """The client lists the policy, starts it, and prints each computer's delivery; exit 3."""
    a1, a2 = await start_agent("a1"), await start_agent("a2")
    computers = [("a1", a1.address), ("a2", a2.address), ("down", closed_address),
                 ("hung", hung_address)]  # fmt: skip
    policy = policy_over(computers, tmp_path, source_tree)
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))

    result = await node_client("--server", server.address, "nightly")
    assert result.returncode == 3, result
    assert "nightly\tnightly\t4 computers" in result.stdout
    lines = {line.split("\t")[0].strip(): line for line in result.stdout.splitlines()}
    for name in ("a1", "a2"):
        assert "\tDELIVERY_RECEIVED\t" in lines[name] and "OK: job j-" in lines[name]
    for name in ("down", "hung"):
        assert "\tDELIVERY_NOT_RECEIVED\t" in lines[name]
    assert "total 4, received 2, not received 2, skipped 0" in result.stdout


async def test_node_client_reports_errors_in_one_line(server, closed_address: str) -> None:  # type: ignore[no-untyped-def]
    """An unknown policy or a down server: exit 1 with the gRPC code."""
    unknown = await node_client("--server", server.address, "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "client.js: NOT_FOUND: policy 'nope' not found"
    down = await node_client("--server", closed_address, "nightly")
    assert down.returncode == 1 and down.stderr.startswith("client.js: UNAVAILABLE: ")
