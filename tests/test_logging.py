"""--log-format on the server and the agent: every line about a session carries its id."""

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from backup.logs import JsonFormatter, TextFormatter
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

from conftest import policy_over, wait_for


def start_process(command: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name(command)), *args, "--log-format", "json"],
            stderr=stderr,
        )


def json_lines(log: Path) -> list[dict[str, str]]:
    """Every line of the log, each of which must be one JSON object."""
    return [json.loads(line) for line in log.read_text().splitlines()]


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0


async def test_json_logs_of_server_and_agent_carry_the_session_id(
    tmp_path: Path, source_tree: Path, closed_address: str
) -> None:
    """The not-received line names computer, address and code; agent job lines the session."""
    server_log, agent_log = tmp_path / "server.log", tmp_path / "agent.log"
    server = start_process(
        "backup-server", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "s.db"), log=server_log
    )
    agent = start_process(
        "backup-agent", "--listen", "127.0.0.1:0", "--name", "a1",
        "--data-dir", str(tmp_path / "a1"), log=agent_log,
    )  # fmt: skip
    try:

        async def started() -> bool:
            return (tmp_path / "a1" / "agent.json").exists() and any(
                "listening on" in line["message"] for line in json_lines(server_log)
            )

        await wait_for(started, 20)
        [listening] = [e for e in json_lines(server_log) if "listening on" in e["message"]]
        server_address = listening["message"].split("listening on ")[1].split()[0]
        agent_address = json.loads((tmp_path / "a1" / "agent.json").read_text())["address"]
        policy = policy_over(
            [("a1", agent_address), ("down", closed_address)], tmp_path, source_tree
        )
        async with grpc.aio.insecure_channel(server_address) as channel:
            stub = api_grpc.PolicyServiceStub(channel)
            await stub.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
            await stub.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="logged"))
            await stub.StopPolicy(api.StopPolicyRequest(policy_id="p", session_id="stopper"))
    finally:
        await stop(server)
        await stop(agent)

    server_lines = json_lines(server_log)
    not_received = [e for e in server_lines if e["message"].startswith("not received")]
    assert [e["session_id"] for e in not_received] == ["logged", "stopper"]
    for entry in not_received:
        assert entry["level"] == "WARNING"
        for word in ("down", closed_address, "UNAVAILABLE"):
            assert word in entry["message"]
    about_session = [e for e in server_lines if "logged" in e["message"]]
    assert len(about_session) >= 3  # began, not received, finished
    assert all(e.get("session_id") == "logged" for e in about_session)
    assert "session_id" not in server_lines[0]  # start-up is about no session
    agent_lines = json_lines(agent_log)
    jobs = [e for e in agent_lines if e["message"].startswith("job ")]
    assert len(jobs) == 2 and all(e["session_id"] == "logged" for e in jobs), jobs
    [stop_line] = [e for e in agent_lines if e["message"].startswith("stop of policy p")]
    assert stop_line["session_id"] == "stopper"


def record(message: str, session_id: str = "") -> logging.LogRecord:
    made = logging.LogRecord("backup_server.control", logging.INFO, "x.py", 1, message, (), None)
    if session_id:
        made.session_id = session_id
    return made


def test_text_lines_name_the_session_once() -> None:
    """Text adds `[session ID]` unless the message already says it; no session, no suffix."""
    text = TextFormatter()
    assert text.format(record("job j-1 stopped", "s-1")).endswith(": job j-1 stopped [session s-1]")
    assert text.format(record("session s-1 finished", "s-1")).endswith(": session s-1 finished")
    assert text.format(record("listening")).endswith(": listening")
    entry = json.loads(JsonFormatter().format(record("job j-1 stopped", "s-1")))
    assert (entry["message"], entry["session_id"], entry["level"]) == (
        "job j-1 stopped",
        "s-1",
        "INFO",
    )
