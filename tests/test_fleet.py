"""The fleet simulator answers like an agent, over real gRPC, in-process and as a command."""

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from security_support import Pki

from agent_stub.fleet import Fleet
from backup.ctl.credentials import OperatorCredentials
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import resources_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
JOB_SECONDS = 0.5


def agents_of(fleet: Fleet) -> list[str]:
    return [agent["address"] for agent in fleet.addresses()["agents"]]


def start_request(policy_id: str = "nightly", session_id: str = "s-1") -> agent_api.StartJobRequest:
    return agent_api.StartJobRequest(
        session_id=session_id,
        policy=pb.BackupPolicy(id=policy_id, source_paths=["/srv"], repository="/backup"),
    )


async def test_start_stop_list_get_like_an_agent(start_fleet, agent_control) -> None:
    """One job per policy, already_running, was_running, newest first, GetJob: as an agent."""
    fleet = await start_fleet()
    agent = agent_control(agents_of(fleet)[0])
    first = await agent.StartJob(start_request(session_id="s-1"))
    assert not first.already_running
    assert first.job.state == pb.JOB_STATE_RUNNING
    assert first.job.session_id == "s-1"
    again = await agent.StartJob(start_request(session_id="s-2"))
    assert again.already_running and again.job.id == first.job.id
    other = await agent.StartJob(start_request("weekly"))
    listed = await agent.ListJobs(agent_api.ListJobsRequest())
    assert [job.id for job in listed.jobs] == [other.job.id, first.job.id]
    only = await agent.ListJobs(agent_api.ListJobsRequest(policy_id="weekly"))
    assert [job.id for job in only.jobs] == [other.job.id]
    stopped = await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    assert stopped.was_running and stopped.job.id == first.job.id
    assert stopped.job.state == pb.JOB_STATE_STOPPED
    assert (await agent.GetJob(agent_api.GetJobRequest(job_id=first.job.id))).state == (
        pb.JOB_STATE_STOPPED
    )
    idle = await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    assert not idle.was_running and not idle.job.id
    restarted = await agent.StartJob(start_request(session_id="s-3"))
    assert not restarted.already_running and restarted.job.id != first.job.id
    points = await agent.ListRestorePoints(agent_api.ListRestorePointsRequest())
    assert not points.restore_points  # nothing was written


async def test_each_agent_keeps_its_own_jobs(start_fleet, agent_control) -> None:
    """A job started on one simulated agent does not exist on its neighbour."""
    fleet = await start_fleet()
    first, second = (agent_control(address) for address in agents_of(fleet))
    await first.StartJob(start_request())
    assert not (await second.StartJob(start_request())).already_running
    assert len((await second.ListJobs(agent_api.ListJobsRequest())).jobs) == 1


async def test_job_succeeds_after_its_running_time(start_fleet, agent_control) -> None:
    """A job runs --job-seconds, then has succeeded, and a new start begins a new job."""
    fleet = await start_fleet(job_seconds=JOB_SECONDS)
    agent = agent_control(agents_of(fleet)[0])
    job = (await agent.StartJob(start_request())).job
    await asyncio.sleep(JOB_SECONDS + 0.1)
    done = await agent.GetJob(agent_api.GetJobRequest(job_id=job.id))
    assert done.state == pb.JOB_STATE_SUCCEEDED
    assert done.end_time.ToNanoseconds() > done.start_time.ToNanoseconds()
    assert not (await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))).was_running
    assert not (await agent.StartJob(start_request())).already_running


async def test_a_start_delay_lets_a_stop_arrive_while_the_start_is_on_the_wire(start_fleet, agent_control) -> None:
    """With start_delay, a StopJob sent while a StartJob waits finds nothing running, and the job starts after it, as on a real agent whose start is still on the wire."""
    fleet = await start_fleet(start_delay=0.5)
    agent = agent_control(agents_of(fleet)[0])
    starting = asyncio.ensure_future(agent.StartJob(start_request()))
    await asyncio.sleep(0.1)
    early = await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    assert not early.was_running and not starting.done()
    started = await starting
    assert started.job.state == pb.JOB_STATE_RUNNING and not started.already_running
    late = await agent.StopJob(agent_api.StopJobRequest(policy_id="nightly"))
    assert late.was_running and late.job.id == started.job.id


async def test_refuses_what_an_agent_refuses(start_fleet, agent_control) -> None:
    """Bad ids are INVALID_ARGUMENT and an unknown job NOT_FOUND, as from a real agent."""
    fleet = await start_fleet()
    agent = agent_control(agents_of(fleet)[0])
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await agent.StartJob(start_request("Not An Id"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.id" in (bad.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await agent.GetJob(agent_api.GetJobRequest(job_id="j-none"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_hung_and_refused_addresses(start_fleet, agent_control) -> None:
    """A hung address runs into the deadline; a refused one is UNAVAILABLE at once."""
    fleet = await start_fleet(count=0, hung=1, refused=1)
    addresses = fleet.addresses()
    for address, code in (
        (addresses["hung"][0], grpc.StatusCode.DEADLINE_EXCEEDED),
        (addresses["refused"][0], grpc.StatusCode.UNAVAILABLE),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await agent_control(address).ListJobs(agent_api.ListJobsRequest(), timeout=0.5)
        assert failed.value.code() == code


def run_fleet(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent_stub.fleet", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port_run(length: int) -> int:
    """A first port from which `length` consecutive ports are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + length > 65535:
            continue
        try:
            held = []
            for port in range(base, base + length):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError("no run of free ports found")


async def test_command_serves_from_base_port_and_prints_addresses(
    tmp_path: Path, agent_control
) -> None:
    """The command serves consecutive ports from --base-port and prints them as one JSON line."""
    base = free_port_run(4)
    written = tmp_path / "fleet.json"
    process = run_fleet(
        "--count", "2", "--base-port", str(base), "--hung", "1", "--refused", "1",
        "--write", str(written),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        addresses = json.loads(line)
        assert addresses == json.loads(written.read_text())
        assert addresses["agents"] == [
            {"name": f"sim-{base}", "address": f"127.0.0.1:{base}"},
            {"name": f"sim-{base + 1}", "address": f"127.0.0.1:{base + 1}"},
        ]
        assert addresses["hung"] == [f"127.0.0.1:{base + 2}"]
        assert addresses["refused"] == [f"127.0.0.1:{base + 3}"]
        reply = await agent_control(f"127.0.0.1:{base + 1}").StartJob(start_request())
        assert not reply.already_running
    finally:
        process.terminate()
        _, errors = await asyncio.to_thread(process.communicate, timeout=10)
    assert process.returncode == 0, errors


async def test_command_fails_clearly_when_a_port_is_taken() -> None:
    """A base port already in use ends the command with one clear line, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_fleet("--count", "1", "--base-port", str(port))
        _, errors = await asyncio.to_thread(process.communicate, timeout=20)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in errors
    assert "Traceback" not in errors


async def test_command_refuses_more_agents_than_open_files_allow() -> None:
    """Asking for more agents than the open-file limit allows says to split the fleet."""
    process = run_fleet("--count", "10000000", "--base-port", "0")
    _, errors = await asyncio.to_thread(process.communicate, timeout=20)
    assert process.returncode == 1
    assert "open files" in errors and "several fleet processes" in errors


async def list_jobs_code(address: str, credentials: OperatorCredentials | None) -> grpc.StatusCode:
    """ListJobs over TLS with `credentials` (plaintext without); its status code."""
    async with (
        credentials.channel(address) if credentials else grpc.aio.insecure_channel(address)
    ) as channel:
        try:
            await agent_grpc.AgentControlStub(channel).ListJobs(
                agent_api.ListJobsRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_tls_fleet_answers_only_the_backup_server(start_fleet, pki: Pki) -> None:
    """With --tls-*, every agent (one certificate, many ports) answers the server's certificate; no certificate, an operator's, another CA's server certificate and plaintext are refused."""
    fleet = await start_fleet(tls=pki.tls(pki.agent()))
    stranger = pki.issued("server", pki.other)
    for address in agents_of(fleet):
        assert await list_jobs_code(address, pki.client(pki.issued("server"))) == (
            grpc.StatusCode.OK
        )
        assert await list_jobs_code(address, pki.client()) == grpc.StatusCode.UNAVAILABLE
        assert await list_jobs_code(address, pki.client(pki.issued("operator"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await list_jobs_code(address, pki.client(stranger)) == grpc.StatusCode.UNAVAILABLE
        assert await list_jobs_code(address, None) == grpc.StatusCode.UNAVAILABLE


async def test_tls_command_serves_mutual_tls(pki: Pki) -> None:
    """The command with --tls-cert/--tls-key/--tls-ca serves its agents over mutual TLS and says so."""
    agent = pki.agent()
    process = run_fleet(
        "--count", "1", "--base-port", "0",
        "--tls-cert", str(agent.cert), "--tls-key", str(agent.key), "--tls-ca", str(pki.ca),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        address = json.loads(line)["agents"][0]["address"]
        assert await list_jobs_code(address, pki.client(pki.issued("server"))) == (
            grpc.StatusCode.OK
        )
        assert await list_jobs_code(address, None) == grpc.StatusCode.UNAVAILABLE
    finally:
        process.terminate()
        _, errors = await asyncio.to_thread(process.communicate, timeout=10)
    assert process.returncode == 0, errors
    assert "(mutual TLS, loopback)" in errors


async def test_command_refuses_incomplete_or_foreign_tls_material(pki: Pki) -> None:
    """--tls-cert without its key and CA, or a certificate of another role, ends the command with one clear line."""
    operator = pki.issued("operator")
    partial = run_fleet("--count", "1", "--base-port", "0", "--tls-cert", str(operator.cert))
    foreign = run_fleet(
        "--count", "1", "--base-port", "0",
        "--tls-cert", str(operator.cert), "--tls-key", str(operator.key), "--tls-ca", str(pki.ca),
    )  # fmt: skip
    _, partial_errors = await asyncio.to_thread(partial.communicate, timeout=20)
    _, foreign_errors = await asyncio.to_thread(foreign.communicate, timeout=20)
    assert partial.returncode == 2
    assert "--tls-cert, --tls-key and --tls-ca go together" in partial_errors
    assert foreign.returncode == 1
    assert "backup-operator; this process needs backup-agent" in foreign_errors
    assert "Traceback" not in foreign_errors
