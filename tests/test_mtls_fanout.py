"""The fan-out over mutual TLS: verified agents receive, every other computer is not received with the reason."""

import asyncio
import logging
import time

import grpc

from agent_stub.local import run_job
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import DEADLINE, policy_over, wait_for

RECEIVED, NOT_RECEIVED = pb.DELIVERY_RECEIVED, pb.DELIVERY_NOT_RECEIVED


async def test_only_verified_agents_receive(
    start_server, start_agent, pki, closed_address, hung_address, tmp_path, source_tree, caplog
) -> None:
    """Agents with our CA's certificate for their address receive; a stranger's certificate, a certificate for another address, an agent that refuses the server, a plaintext agent, a closed port and a hung computer are NOT_RECEIVED with the reason."""
    server = await start_server(tls=pki.tls(pki.issued("server")))
    other = pki.issued("agents/agent", pki.other)
    agents = {
        "web-1": await start_agent("web-1", tls=pki.tls(pki.agent())),
        "web-2": await start_agent("web-2", tls=pki.tls(pki.agent())),
        "stranger": await start_agent("stranger", tls=pki.tls(other, pki.other / "ca.pem")),
        "misnamed": await start_agent("misnamed", tls=pki.tls(pki.agent("elsewhere"))),
        "distrustful": await start_agent(
            "distrustful", tls=pki.tls(pki.agent(), pki.other / "ca.pem")
        ),
        "plain": await start_agent("plain"),
    }
    computers = [(name, agent.address) for name, agent in agents.items()]
    computers += [("down", closed_address), ("hung", hung_address)]
    async with pki.client(pki.issued("operator")).channel(server.address) as channel:
        policies = api_grpc.PolicyServiceStub(channel)
        policy = policy_over(computers, tmp_path, source_tree)
        await policies.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="backup_server"):
            session = await policies.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        elapsed = time.monotonic() - started

    results = {result.computer.name: result for result in session.computer_results}
    assert {name: result.delivery for name, result in results.items()} == {
        "web-1": RECEIVED,
        "web-2": RECEIVED,
        "stranger": NOT_RECEIVED,
        "misnamed": NOT_RECEIVED,
        "distrustful": NOT_RECEIVED,
        "plain": NOT_RECEIVED,
        "down": NOT_RECEIVED,
        "hung": NOT_RECEIVED,
    }
    detail = {name: result.detail for name, result in results.items()}
    assert detail["stranger"].startswith(
        "UNAVAILABLE: TLS: the agent's certificate did not verify: unable to get local issuer"
    )
    assert detail["misnamed"].startswith(
        "UNAVAILABLE: TLS: the agent's certificate is not issued for this address"
    )
    assert "may have refused the server's certificate" in detail["distrustful"]
    assert detail["plain"].startswith("UNAVAILABLE: TLS: the agent does not speak TLS")
    assert detail["down"].startswith("UNAVAILABLE")
    assert detail["hung"].startswith("DEADLINE_EXCEEDED")
    assert session.state == pb.SESSION_STATE_WARNING
    assert session.statistics.received == 2 and session.statistics.not_received == 6
    assert elapsed < DEADLINE + 3.0, "a hung or refused computer must cost one deadline at most"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert f"not received: computer=stranger address={agents['stranger'].address}" in logged


async def test_local_run_works_on_a_tls_agent(
    start_server, start_agent, pki, tmp_path, source_tree
) -> None:
    """`backup-agent run` reaches a TLS agent through its local socket and starts the policy it received."""
    server = await start_server(tls=pki.tls(pki.issued("server")))
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    async with pki.client(pki.issued("operator")).channel(server.address) as channel:
        policies = api_grpc.PolicyServiceStub(channel)
        policy = policy_over([("web-1", agent.address)], tmp_path, source_tree)
        await policies.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        session = await policies.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert session.computer_results[0].delivery == RECEIVED
    socket = agent.config.data_dir / "agent.sock"
    local = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    async with grpc.aio.secure_channel(f"unix:{socket}", local) as channel:
        control = agent_grpc.AgentControlStub(channel)

        async def idle() -> bool:
            jobs = await control.ListJobs(agent_api.ListJobsRequest(policy_id="nightly"))
            return all(job.state != pb.JOB_STATE_RUNNING for job in jobs.jobs)

        await wait_for(idle)
        reply = await asyncio.to_thread(run_job, "nightly", agent.config.data_dir)
        assert not reply.already_running
        job = await control.GetJob(agent_api.GetJobRequest(job_id=reply.job.id))
        assert job.session_id == "" and job.policy_id == "nightly"


async def test_the_readme_setup_from_the_command_line(spawn, pki, tmp_path, source_tree) -> None:
    """The README's secure setup, with real processes: a TLS server and a TLS agent confined to a root, an operator starting a policy with its certificate."""
    root = tmp_path / "data"
    root.mkdir()
    source = root / "source"
    source_tree.rename(source)
    ca, server_pair, agent_pair = pki.ca, pki.issued("server"), pki.agent()
    server = spawn(
        "backup_server",
        "--listen", "127.0.0.1:0", "--db", str(tmp_path / "server.db"), "--agent-deadline", "2",
        "--tls-cert", str(server_pair.cert), "--tls-key", str(server_pair.key), "--tls-ca", str(ca),
    )  # fmt: skip
    agent = spawn(
        "agent_stub",
        "--listen", "127.0.0.1:0", "--name", "web-1", "--data-dir", str(tmp_path / "agent"),
        "--tls-cert", str(agent_pair.cert), "--tls-key", str(agent_pair.key), "--tls-ca", str(ca),
        "--allow-path", str(root),
    )  # fmt: skip
    assert "mutual TLS" in server.log.read_text()
    assert "development mode" not in agent.log.read_text()
    policy = pb.BackupPolicy(
        name="nightly",
        computers=[pb.Computer(name="web-1", address=agent.address)],
        source_paths=[str(source)],
        repository=str(root / "repository"),
    )
    async with pki.client(pki.issued("operator")).channel(server.address) as channel:
        policies = api_grpc.PolicyServiceStub(channel)
        await policies.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        session = await policies.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert session.computer_results[0].delivery == RECEIVED, session.computer_results[0].detail
