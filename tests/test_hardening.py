"""Hardening: message limits sized for 10,000 computers, compatible keepalive, bounded concurrency, deadlines, no secrets in logs, a private database file."""

import logging
import stat

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_support import TOKEN

from backup import serving, validation
from backup.ctl.credentials import OperatorCredentials
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.transport import GrpcAgentTransport, channel_options

GRPC_DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024


def largest_session(computers: int) -> pb.PolicySession:
    """A finished session whose every field is as long as validation lets it be."""
    session = pb.PolicySession(id="s-" + "x" * 61, policy_id="p" * 63, warnings=["w" * 300] * 100)
    for index in range(computers):
        name = f"{index:05d}".ljust(validation.NAME_MAX, "n")
        host = ".".join(["h" * 62] * 4)[: validation.HOST_MAX]
        session.computer_results.add(
            computer=pb.Computer(name=name, address=f"{host}:65535"),
            protection_group_id="g" * 63,
            delivery=pb.DELIVERY_NOT_RECEIVED,
            detail="UNAVAILABLE: " + "d" * 500,
            job_id="j-20260101-000000-" + "0" * 8,
        ).latency.FromNanoseconds(2_000_000_000)
    return session


def option(options, name):
    return dict(options)[name]


def test_message_limits_fit_a_10000_computer_session() -> None:
    """A worst-case 10,000-computer session outgrows grpc's 4 MiB default and fits the limit both sides set explicitly."""
    size = largest_session(validation.COMPUTERS_MAX).ByteSize()
    assert GRPC_DEFAULT_RECEIVE_LIMIT < size < serving.MAX_MESSAGE_BYTES
    for options in (serving.SERVER_OPTIONS, serving.CLIENT_OPTIONS, channel_options(5.0)):
        assert option(options, "grpc.max_receive_message_length") == serving.MAX_MESSAGE_BYTES


def test_keepalive_of_clients_is_within_what_servers_permit() -> None:
    """Clients ping no more often than servers permit, and both allow pings between calls, so no GOAWAY(too_many_pings)."""
    for client in (serving.CLIENT_OPTIONS, channel_options(5.0)):
        assert option(client, "grpc.keepalive_time_ms") >= option(
            serving.SERVER_OPTIONS, "grpc.http2.min_ping_interval_without_data_ms"
        )
        assert option(client, "grpc.keepalive_permit_without_calls") == 1
    assert option(serving.SERVER_OPTIONS, "grpc.keepalive_permit_without_calls") == 1


async def test_the_agent_bounds_concurrent_calls(start_agent, agent_control) -> None:
    """With every slot held (here by a health watch), the next call is RESOURCE_EXHAUSTED instead of queueing without bound."""
    agent = await start_agent("web-1", max_concurrent_rpcs=1)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await agent_grpc.AgentControlStub(channel).ListJobs(
                agent_api.ListJobsRequest(), timeout=5
            )
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        watch.cancel()


async def test_calls_to_agents_need_a_deadline() -> None:
    """The transport refuses to send a command without a positive deadline."""
    transport = GrpcAgentTransport()
    for deadline in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive deadline"):
            await transport.call("127.0.0.1:1", "StartJob", b"", deadline)
    assert transport.channel_count == 0
    await transport.close()


async def test_the_database_file_is_private(start_server, policy_service, tmp_path) -> None:
    """The SQLite file and its WAL companions are created 0600."""
    await policy_service.ListPolicies(api.ListPoliciesRequest())
    files = [tmp_path / "server.db", tmp_path / "server.db-wal", tmp_path / "server.db-shm"]
    assert {path: stat.S_IMODE(path.stat().st_mode) for path in files} == dict.fromkeys(
        files, 0o600
    )


async def test_no_secret_reaches_logs_or_replies(start_server, pki, tmp_path, caplog) -> None:
    """The token and the private keys appear in no log line and no reply, refused or accepted."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with caplog.at_level(logging.DEBUG):
        server = await start_server(tls=pki.tls(pki.issued("server")), api_token_file=token_file)
        texts = []
        for token in ("wrong-" + TOKEN, TOKEN[:20], TOKEN):
            async with pki.client(token=token).channel(server.address) as channel:
                try:
                    reply = await api_grpc.PolicyServiceStub(channel).ListPolicies(
                        api.ListPoliciesRequest()
                    )
                    texts.append(str(reply))
                except grpc.aio.AioRpcError as error:
                    assert error.details() == "authentication required"
                    texts.append(f"{error.details()} {error.trailing_metadata()}")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused /backup.v1.PolicyService/ListPolicies" in logged
    key = pki.issued("server").key.read_text()
    for secret in (TOKEN, TOKEN[:20], key.splitlines()[1]):
        assert secret not in logged
        assert all(secret not in text for text in texts)


def test_operator_credentials_refuse_half_a_pair(tmp_path, pki) -> None:
    """A client certificate without its key (or without a CA to send it over TLS) is refused before any call."""
    with pytest.raises(ValueError, match="needs its key"):
        OperatorCredentials.from_files(ca=pki.ca, cert=pki.issued("operator").cert)
    with pytest.raises(ValueError, match="give the CA"):
        OperatorCredentials.from_files(
            cert=pki.issued("operator").cert, key=pki.issued("operator").key
        )
    token = tmp_path / "token"
    token.write_text(f"  {TOKEN}\n")
    assert OperatorCredentials.from_files(token_file=token).metadata() == (
        ("authorization", f"Bearer {TOKEN}"),
    )
