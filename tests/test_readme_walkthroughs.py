"""The README's backupctl and grpcurl walkthroughs, run as written against a live server.

Every ```sh block of each section is run in order with bash. The README's fixed addresses
and paths are replaced by live ones: the server (50051), agents ws1 (50061) and ws2
(50062), a closed port (50069) and /tmp/walkthrough. Its ```console blocks (starting the
processes) are what the fixtures do.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_stub.app import AgentServer
from backup_server.app import BackupServer

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class Step:
    """What a command containing `marker` must do: its exit code and what it prints."""

    marker: str
    exit_code: int = 0
    prints: tuple[str, ...] = ()


SECTIONS = {
    "backupctl: the operator's command line": [
        Step("backupctl group create lab", prints=("created protection group lab",)),
        Step("backupctl policy create nightly", prints=("created policy nightly",)),
        Step("backupctl policy update nightly", prints=("14 restore points", "20971520 bytes/s")),
        Step(
            "backupctl start nightly",
            3,
            ("start nightly: WARNING - 3 computers: 2 received, 1 not received",),
        ),
        Step("backupctl stop nightly -o json", 3, ('"action": "SESSION_ACTION_STOP"',)),
        Step("backupctl sessions nightly", prints=("stop", "start")),
        Step("backupctl jobs 127.0.0.1:50061", prints=("nightly",)),
    ],
    "grpcurl walkthrough": [
        Step(" list", prints=("backup.v1.PolicyService", "grpc.health.v1.Health")),
        Step("/CreateProtectionGroup", prints=('"kind": "PROTECTION_GROUP_KIND_MANUAL"',)),
        Step('"policyId": "nightly",\n  "policy"', prints=('"protectionGroupIds": [',)),
        Step('"broken"', 64 + 3, ('"fieldViolations"', "policy.computers[0].address")),
        Step("/UpdatePolicy", prints=('"retentionPoints": 14',)),
        Step(
            "/StartPolicy",
            prints=('"id": "first-start"', '"notReceived": 1', '"computerResults"'),
        ),
        Step("/GetSession", prints=('"id": "first-start"', '"state": "SESSION_STATE_WARNING"')),
        Step("/ListJobs", prints=('"sessionId": "first-start"',)),
        Step("/StopPolicy", prints=('"action": "SESSION_ACTION_STOP"',)),
        Step("/ListSessions", prints=('"id": "first-start"',)),
    ],
}


def sh_blocks(section: str) -> list[str]:
    """The ```sh blocks under the README heading `## <section>`, in order."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    return re.findall(r"```sh\n(.*?)```", body, re.DOTALL)


def step_of(block: str, steps: list[Step]) -> Step:
    matching = [step for step in steps if step.marker in block]
    assert len(matching) == 1, f"expected one step for this README block:\n{block}"
    return matching[0]


@pytest.mark.parametrize("section", SECTIONS)
async def test_readme_walkthrough_runs_as_written(
    section: str,
    server: BackupServer,
    start_agent,  # type: ignore[no-untyped-def]
    closed_address: str,
    tmp_path: Path,
) -> None:
    """Each command of the section runs, exits as expected and prints what the README says."""
    ws1: AgentServer = await start_agent("ws1")
    ws2: AgentServer = await start_agent("ws2")
    walkthrough = tmp_path / "walkthrough"
    (walkthrough / "data").mkdir(parents=True)
    (walkthrough / "data" / "hello.txt").write_text("hello\n")
    live = {
        "127.0.0.1:50051": server.address,
        "127.0.0.1:50061": ws1.address,
        "127.0.0.1:50062": ws2.address,
        "127.0.0.1:50069": closed_address,
        "/tmp/walkthrough": str(walkthrough),
    }
    # The README's backupctl commands use the default server, which is this one here.
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "COLUMNS": "250",
        "BACKUP_SERVER": server.address,
    }
    steps = SECTIONS[section]
    blocks = sh_blocks(section)
    assert sorted(step_of(block, steps).marker for block in blocks) == sorted(
        step.marker for step in steps
    ), "a walkthrough step is missing from the README"
    for block in blocks:
        step = step_of(block, steps)
        command = block
        for written, actual in live.items():
            command = command.replace(written, actual)
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", command], capture_output=True, text=True, env=env,
            timeout=60,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == step.exit_code, (block, output)
        assert "Traceback" not in output
        for expected in step.prints:
            assert expected in output, (block, expected, output)
        if step.marker == "/StartPolicy":
            session = json.loads(result.stdout)
            deliveries = {r["computer"]["name"]: r["delivery"] for r in session["computerResults"]}
            assert deliveries == {
                "ws1": "DELIVERY_RECEIVED",
                "ws2": "DELIVERY_RECEIVED",
                "ws3": "DELIVERY_NOT_RECEIVED",
            }
